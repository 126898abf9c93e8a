//! A bound on how deep and how long a policy's expressions are, checked before Cedar parses them.
//!
//! Cedar's parser, validator and the drop of its syntax tree recurse once per nesting level and per
//! operand of an operator chain; measured on a 2 MiB thread stack in a debug build, about 35 nested
//! parentheses, 35 nested set literals, 500 chained `if`s or 20,000 chained `+` overflow the stack
//! and abort the process. A hostile or careless file must be refused, not crash the server, so
//! these limits sit well below that and far above what a readable policy needs.

/// Deepest nesting of `(`, `[` and `{`, counting the policy's own scope parentheses and `when` braces.
pub(crate) const MAX_NESTING: usize = 16;
/// Most `if` expressions in one policy.
pub(crate) const MAX_IFS: usize = 8;
/// Most operators (`&&`, `+`, `.`, `==`, `like`, …) in one policy.
pub(crate) const MAX_OPERATORS: usize = 1000;

/// The byte offset and reason of the first limit the text exceeds, if any.
pub(crate) fn check(text: &str) -> Option<(usize, String)> {
    let bytes = text.as_bytes();
    let (mut depth, mut ifs, mut operators) = (0_usize, 0_usize, 0_usize);
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        match b {
            b'/' if bytes.get(i + 1) == Some(&b'/') => {
                i = text[i..].find('\n').map_or(bytes.len(), |n| i + n);
                continue;
            }
            b'"' => {
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
            }
            b'(' | b'[' | b'{' => {
                depth += 1;
                if depth > MAX_NESTING {
                    return Some((i, format!("nested deeper than {MAX_NESTING} brackets")));
                }
            }
            b')' | b']' | b'}' => depth = depth.saturating_sub(1),
            b';' if depth == 0 => (ifs, operators) = (0, 0),
            b'&' | b'|' | b'+' | b'-' | b'*' | b'!' | b'=' | b'<' | b'>' | b'.' => {
                // One operator per run of operator characters (`&&`, `<=`, `!=`).
                while bytes
                    .get(i + 1)
                    .is_some_and(|c| b"&|+-*!=<>".contains(c) && !matches!(b, b'.'))
                {
                    i += 1;
                }
                operators += 1;
            }
            b if b.is_ascii_alphabetic() || b == b'_' => {
                let start = i;
                while bytes
                    .get(i + 1)
                    .is_some_and(|c| c.is_ascii_alphanumeric() || *c == b'_')
                {
                    i += 1;
                }
                match &text[start..=i] {
                    "if" => {
                        ifs += 1;
                        if ifs > MAX_IFS {
                            return Some((
                                start,
                                format!("more than {MAX_IFS} `if` in one policy"),
                            ));
                        }
                    }
                    "has" | "like" | "in" | "is" => operators += 1,
                    _ => {}
                }
            }
            _ => {}
        }
        if operators > MAX_OPERATORS {
            return Some((
                i,
                format!("more than {MAX_OPERATORS} operators in one policy"),
            ));
        }
        i += 1;
    }
    None
}
