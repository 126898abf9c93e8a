//! Parsers for the `/proc/<pid>` files the attestors read: `status`, `stat` and `cgroup`.
//!
//! They take bytes, not `&str`: a process chooses its own name (`comm`), which appears in these
//! files and may hold any byte, including `)`, spaces and newlines. Any content gives a value or a
//! [`ProcParseError`], never a panic (proptests in `procfs_tests.rs`).

/// Most supplementary groups a process can have (`NGROUPS_MAX` on Linux).
pub const MAX_GROUPS: usize = 65_536;

/// Longest `/proc/<pid>/status` read: 65,536 supplementary groups fit.
pub const MAX_STATUS_LEN: usize = 1024 * 1024;

/// Why a `/proc` file's content was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProcParseError {
    #[error("field `{field}` is missing")]
    MissingField { field: &'static str },
    #[error("field `{field}` appears more than once")]
    DuplicateField { field: &'static str },
    #[error("field `{field}` does not hold the numbers expected")]
    BadNumbers { field: &'static str },
    #[error("`Groups:` lists {count} groups; the limit is {MAX_GROUPS}")]
    TooManyGroups { count: usize },
    #[error("the stat line has no `(comm)` field")]
    StatNoComm,
    #[error("the stat line has {fields} fields; the start time is field 22")]
    StatTooShort { fields: usize },
    #[error("line {line} is not `hierarchy-id:controllers:path`")]
    CgroupLine { line: usize },
}

/// What the attestors need from `/proc/<pid>/status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcStatus {
    /// Real, effective, saved and filesystem user IDs, in the kernel's order.
    pub uids: [u32; 4],
    /// Real, effective, saved and filesystem group IDs.
    pub gids: [u32; 4],
    /// Supplementary group IDs, as listed.
    pub groups: Vec<u32>,
}

impl ProcStatus {
    /// The effective user ID: what the kernel checks permissions with, and what SPIRE's `unix`
    /// attestor reports as `unix:uid`.
    pub fn effective_uid(&self) -> u32 {
        self.uids[1]
    }

    /// The effective group ID (SPIRE's `unix:gid`).
    pub fn effective_gid(&self) -> u32 {
        self.gids[1]
    }
}

/// One line of `/proc/<pid>/cgroup`: `hierarchy-id:controller-list:path`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupLine {
    /// `0` for the cgroup v2 (unified) hierarchy.
    pub hierarchy_id: u32,
    /// Empty for cgroup v2; `cpu,cpuacct` or `name=systemd` for v1 hierarchies.
    pub controllers: Vec<String>,
    /// The cgroup path, relative to the reader's cgroup namespace. Bytes: a cgroup may be named
    /// with any byte but `/` and newline.
    pub path: Vec<u8>,
}

impl CgroupLine {
    /// True for the cgroup v2 line (`0::/…`).
    pub fn is_unified(&self) -> bool {
        self.hierarchy_id == 0 && self.controllers.is_empty()
    }

    /// True for systemd's own named v1 hierarchy (`N:name=systemd:/…`).
    pub fn is_systemd_v1(&self) -> bool {
        self.controllers.iter().any(|c| c == "name=systemd")
    }

    /// The path as UTF-8, if it is.
    pub fn path_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.path).ok()
    }
}

/// Parses `/proc/<pid>/status`, keeping `Uid:`, `Gid:` and `Groups:`.
pub fn parse_status(content: &[u8]) -> Result<ProcStatus, ProcParseError> {
    let mut uids = None;
    let mut gids = None;
    let mut groups = None;
    for line in content.split(|&b| b == b'\n') {
        if let Some(rest) = line.strip_prefix(b"Uid:") {
            set_once(&mut uids, "Uid", parse_four(rest, "Uid")?)?;
        } else if let Some(rest) = line.strip_prefix(b"Gid:") {
            set_once(&mut gids, "Gid", parse_four(rest, "Gid")?)?;
        } else if let Some(rest) = line.strip_prefix(b"Groups:") {
            set_once(&mut groups, "Groups", parse_groups(rest)?)?;
        }
    }
    Ok(ProcStatus {
        uids: uids.ok_or(ProcParseError::MissingField { field: "Uid" })?,
        gids: gids.ok_or(ProcParseError::MissingField { field: "Gid" })?,
        // Kernels since 2.6.x always print the line; treat a missing one as "none" rather than
        // refusing a caller over a field no entry may even use.
        groups: groups.unwrap_or_default(),
    })
}

/// Field 22 of `/proc/<pid>/stat`: the time the process started, in clock ticks after boot.
/// With the pid, it names one process for the life of the system.
pub fn parse_stat_start_time(content: &[u8]) -> Result<u64, ProcParseError> {
    // `pid (comm) state ppid …`: comm may contain anything, so the fields resume after the
    // *last* `)`.
    let open = content
        .iter()
        .position(|&b| b == b'(')
        .ok_or(ProcParseError::StatNoComm)?;
    let close = content
        .iter()
        .rposition(|&b| b == b')')
        .filter(|&close| close > open)
        .ok_or(ProcParseError::StatNoComm)?;
    let rest = content.get(close + 1..).unwrap_or_default();
    // Fields after `)` start at field 3 (state), so field 22 is the 20th of them.
    const START_TIME_INDEX: usize = 22 - 3;
    let mut fields = rest
        .split(|b| b.is_ascii_whitespace())
        .filter(|f| !f.is_empty());
    let mut seen = 0;
    for field in fields.by_ref() {
        if seen == START_TIME_INDEX {
            return parse_u64(field).ok_or(ProcParseError::BadNumbers { field: "starttime" });
        }
        seen += 1;
    }
    Err(ProcParseError::StatTooShort { fields: seen + 2 })
}

/// Parses `/proc/<pid>/cgroup`: cgroup v2 (`0::/path`) and v1 (`4:memory:/path`) lines. A final
/// newline is allowed; any other empty or malformed line is refused.
pub fn parse_cgroup(content: &[u8]) -> Result<Vec<CgroupLine>, ProcParseError> {
    let content = content.strip_suffix(b"\n").unwrap_or(content);
    if content.is_empty() {
        return Ok(Vec::new());
    }
    content
        .split(|&b| b == b'\n')
        .enumerate()
        .map(|(i, line)| parse_cgroup_line(line).ok_or(ProcParseError::CgroupLine { line: i + 1 }))
        .collect()
}

fn parse_cgroup_line(line: &[u8]) -> Option<CgroupLine> {
    let mut parts = line.splitn(3, |&b| b == b':');
    let id = parts.next()?;
    let controllers = parts.next()?;
    // The path is everything after the second colon: it may itself contain colons.
    let path = parts.next()?;
    let hierarchy_id = u32::try_from(parse_u64(id)?).ok()?;
    let controllers = std::str::from_utf8(controllers).ok()?;
    let controllers: Vec<String> = if controllers.is_empty() {
        Vec::new()
    } else {
        controllers.split(',').map(str::to_owned).collect()
    };
    if controllers
        .iter()
        .any(|c| c.is_empty() || c.chars().any(char::is_control))
    {
        return None;
    }
    if !path.starts_with(b"/") {
        return None;
    }
    Some(CgroupLine {
        hierarchy_id,
        controllers,
        path: path.to_vec(),
    })
}

fn set_once<T>(slot: &mut Option<T>, field: &'static str, value: T) -> Result<(), ProcParseError> {
    if slot.is_some() {
        return Err(ProcParseError::DuplicateField { field });
    }
    *slot = Some(value);
    Ok(())
}

fn parse_four(rest: &[u8], field: &'static str) -> Result<[u32; 4], ProcParseError> {
    let bad = ProcParseError::BadNumbers { field };
    let mut out = [0u32; 4];
    let mut numbers = split_numbers(rest);
    for slot in &mut out {
        *slot = numbers.next().ok_or(bad.clone())?.ok_or(bad.clone())?;
    }
    if numbers.next().is_some() {
        return Err(bad);
    }
    Ok(out)
}

fn parse_groups(rest: &[u8]) -> Result<Vec<u32>, ProcParseError> {
    let mut groups = Vec::new();
    for number in split_numbers(rest) {
        let gid = number.ok_or(ProcParseError::BadNumbers { field: "Groups" })?;
        if groups.len() == MAX_GROUPS {
            return Err(ProcParseError::TooManyGroups {
                count: MAX_GROUPS + 1,
            });
        }
        groups.push(gid);
    }
    Ok(groups)
}

/// Whitespace-separated decimal `u32`s; `None` items for anything else.
fn split_numbers(rest: &[u8]) -> impl Iterator<Item = Option<u32>> + '_ {
    rest.split(|b| b.is_ascii_whitespace())
        .filter(|f| !f.is_empty())
        .map(|f| parse_u64(f).and_then(|n| u32::try_from(n).ok()))
}

/// A plain decimal number: ASCII digits only (no sign, no `+`), at most 20 of them.
pub(crate) fn parse_u64(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 20 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

#[cfg(test)]
#[path = "procfs_tests.rs"]
mod tests;
