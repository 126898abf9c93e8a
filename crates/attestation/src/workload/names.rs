//! User and group names from `/etc/passwd` and `/etc/group`, read by hand (no libc, no NSS).
//!
//! Names come from the agent's own files: users known only to LDAP or sssd, or only inside a
//! container's image, have no name here, and their callers get `unix:uid` but no `unix:user`.
//! A file is re-read only when its inode, size, mtime or ctime changed.

use std::collections::HashMap;
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Largest account file read; a bigger one is treated as unreadable (no names).
const MAX_FILE_LEN: u64 = 64 * 1024 * 1024;

/// An id → name table, parsed from one file and refreshed when the file changes.
#[derive(Debug)]
pub struct NameDb {
    path: PathBuf,
    parse_line: fn(&[u8]) -> Option<(String, u32)>,
    /// The file's identity when it was last parsed, and what it held. Replaced whole, so readers
    /// holding the old `Arc` finish their lookup undisturbed.
    cache: Mutex<Option<(FileStamp, Table)>>,
}

/// id → name.
type Table = Arc<HashMap<u32, String>>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl NameDb {
    /// Users, from a file in `/etc/passwd` format.
    pub fn passwd(path: impl Into<PathBuf>) -> Self {
        Self::new(path.into(), parse_passwd_line)
    }

    /// Groups, from a file in `/etc/group` format.
    pub fn group(path: impl Into<PathBuf>) -> Self {
        Self::new(path.into(), parse_group_line)
    }

    fn new(path: PathBuf, parse_line: fn(&[u8]) -> Option<(String, u32)>) -> Self {
        Self {
            path,
            parse_line,
            cache: Mutex::new(None),
        }
    }

    /// The file this table reads.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The current table. An unreadable or missing file gives an empty one: names are an
    /// optional extra, and a caller still gets its numeric selectors.
    pub fn snapshot(&self) -> Table {
        let Ok(file) = File::open(&self.path) else {
            return Arc::default();
        };
        let Ok(meta) = file.metadata() else {
            return Arc::default();
        };
        let stamp = FileStamp {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            ctime: (meta.ctime(), meta.ctime_nsec()),
        };
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((cached, table)) = cache.as_ref()
            && *cached == stamp
        {
            return Arc::clone(table);
        }
        let mut content = Vec::new();
        let read = file.take(MAX_FILE_LEN + 1).read_to_end(&mut content);
        if read.is_err() || content.len() as u64 > MAX_FILE_LEN {
            return Arc::default();
        }
        let table = Arc::new(parse_table(&content, self.parse_line));
        *cache = Some((stamp, Arc::clone(&table)));
        table
    }
}

/// Parses a whole file; for an id listed twice the first line wins, as with `getpwuid(3)`.
fn parse_table(
    content: &[u8],
    parse_line: fn(&[u8]) -> Option<(String, u32)>,
) -> HashMap<u32, String> {
    let mut table = HashMap::new();
    for (name, id) in content.split(|&b| b == b'\n').filter_map(parse_line) {
        table.entry(id).or_insert(name);
    }
    table
}

/// One `/etc/passwd` line, `name:password:uid:gid:gecos:home:shell`, as `(name, uid)`. Comments,
/// NIS `+`/`-` lines and anything malformed give `None`.
pub fn parse_passwd_line(line: &[u8]) -> Option<(String, u32)> {
    parse_account_line(line, 7)
}

/// One `/etc/group` line, `name:password:gid:members`, as `(name, gid)`.
pub fn parse_group_line(line: &[u8]) -> Option<(String, u32)> {
    parse_account_line(line, 4)
}

fn parse_account_line(line: &[u8], fields: usize) -> Option<(String, u32)> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let mut parts = line.split(|&b| b == b':');
    let name = parts.next()?;
    let _password = parts.next()?;
    let id = parts.next()?;
    // The remaining fields must be there (even if empty), or the line is not what it claims.
    if parts.count() != fields - 3 {
        return None;
    }
    let name = std::str::from_utf8(name).ok()?;
    if name.is_empty()
        || name.starts_with(['#', '+', '-'])
        || name.chars().any(|c| c.is_control() || c.is_whitespace())
    {
        return None;
    }
    let id = u32::try_from(super::procfs::parse_u64(id)?).ok()?;
    Some((name.to_owned(), id))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

    use proptest::prelude::*;

    use super::*;

    #[test]
    fn passwd_lines() {
        assert_eq!(
            parse_passwd_line(b"root:x:0:0:root:/root:/bin/bash"),
            Some(("root".to_owned(), 0))
        );
        assert_eq!(
            parse_passwd_line(b"nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\r"),
            Some(("nobody".to_owned(), 65534))
        );
        assert_eq!(parse_passwd_line(b"# comment:x:0:0:::"), None);
        assert_eq!(parse_passwd_line(b"+nis:x:0:0:::"), None);
        assert_eq!(parse_passwd_line(b"short:x:0:0"), None);
        assert_eq!(parse_passwd_line(b"long:x:0:0:::::"), None);
        assert_eq!(parse_passwd_line(b"neg:x:-1:0:::"), None);
        assert_eq!(parse_passwd_line(b"big:x:4294967296:0:::"), None);
        assert_eq!(parse_passwd_line(b":x:5:0:::"), None);
        assert_eq!(parse_passwd_line(b"tab\tname:x:5:0:::"), None);
        assert_eq!(parse_passwd_line(b""), None);
    }

    #[test]
    fn group_lines() {
        assert_eq!(
            parse_group_line(b"sudo:x:27:alice,bob"),
            Some(("sudo".to_owned(), 27))
        );
        assert_eq!(
            parse_group_line(b"empty:x:100:"),
            Some(("empty".to_owned(), 100))
        );
        assert_eq!(parse_group_line(b"nomembers:x:100"), None);
    }

    #[test]
    fn first_line_wins() {
        let table = parse_table(
            b"root:x:0:0:::\ntoor:x:0:0:::\nbad line\n",
            parse_passwd_line,
        );
        assert_eq!(table.get(&0).map(String::as_str), Some("root"));
        assert_eq!(table.len(), 1);
    }

    #[test]
    fn snapshot_follows_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("passwd");
        let db = NameDb::passwd(&path);
        assert!(db.snapshot().is_empty(), "a missing file gives no names");

        std::fs::write(&path, "alice:x:1000:1000:::\n").unwrap();
        assert_eq!(db.snapshot().get(&1000).map(String::as_str), Some("alice"));

        std::fs::write(&path, "bob:x:1000:1000:::\ncarol:x:1001:1001:::\n").unwrap();
        let table = db.snapshot();
        assert_eq!(table.get(&1000).map(String::as_str), Some("bob"));
        assert_eq!(table.get(&1001).map(String::as_str), Some("carol"));
    }

    proptest! {
        #[test]
        fn passwd_line_never_panics(line in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = parse_passwd_line(&line);
            let _ = parse_group_line(&line);
        }

        #[test]
        fn passwd_line_round_trip(name in "[a-z_][a-z0-9_.-]{0,31}", uid in any::<u32>(),
                                  gecos in "[^:\n]{0,20}") {
            let line = format!("{name}:x:{uid}:100:{gecos}:/home/{name}:/bin/sh");
            prop_assert_eq!(parse_passwd_line(line.as_bytes()), Some((name, uid)));
        }

        #[test]
        fn group_line_round_trip(name in "[a-z_][a-z0-9_.-]{0,31}", gid in any::<u32>(),
                                 members in "[a-z,]{0,30}") {
            let line = format!("{name}:x:{gid}:{members}");
            prop_assert_eq!(parse_group_line(line.as_bytes()), Some((name, gid)));
        }
    }
}
