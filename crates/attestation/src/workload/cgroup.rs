//! The `cgroup`/`systemd` workload attestor: selectors from `/proc/<pid>/cgroup`.
//!
//! | selector | value |
//! |---|---|
//! | `cgroup:path:<path>` | the process's cgroup: the v2 line (`0::/…`), or on a v1-only host systemd's `name=systemd` line |
//! | `systemd:unit:<unit>` | the systemd unit that owns that cgroup, e.g. `nginx.service` |
//! | `systemd:id:<unit>` | the same value under the name SPIRE's `systemd` attestor uses |
//!
//! The unit is the first path component that is not a `.slice`, if it is a `.service`, `.scope`,
//! `.socket`, `.mount` or `.swap`: the unit the system manager placed the process in. Deeper
//! components are not units of the system manager: they are a delegated subtree, named by the
//! unit's own processes — a user's `systemd --user` manager names its units there — so trusting
//! them would let any user claim `systemd:unit:nginx.service`. A process in
//! `/user.slice/user-1000.slice/user@1000.service/app.slice/web.service` is in
//! `user@1000.service`, as systemd's own `GetUnitByPID` says.

use lanyard_core::SelectorSet;

use super::procfs::{CgroupLine, ProcParseError, parse_cgroup};
use super::{AttestError, PinnedProcess, WorkloadAttestor, push_selector};

/// Longest `/proc/<pid>/cgroup` accepted: a dozen v1 hierarchies with long paths fit.
const MAX_CGROUP_LEN: usize = 256 * 1024;

/// Unit types systemd runs processes in.
const UNIT_SUFFIXES: &[&str] = &[".service", ".scope", ".socket", ".mount", ".swap"];

/// The `cgroup`/`systemd` attestor. It has no configuration.
#[derive(Debug, Clone, Copy, Default)]
pub struct CgroupAttestor;

impl WorkloadAttestor for CgroupAttestor {
    fn name(&self) -> &'static str {
        "cgroup"
    }

    fn attest(&self, process: &PinnedProcess) -> Result<SelectorSet, AttestError> {
        let content = process.read_file("cgroup", MAX_CGROUP_LEN)?;
        cgroup_selectors(&content).map_err(|source| AttestError::ProcMalformed {
            pid: process.pid(),
            file: "cgroup",
            source,
        })
    }
}

/// The selectors for the content of a `/proc/<pid>/cgroup` file.
pub fn cgroup_selectors(content: &[u8]) -> Result<SelectorSet, ProcParseError> {
    let lines = parse_cgroup(content)?;
    let mut set = SelectorSet::new();
    let Some(path) = primary_path(&lines) else {
        return Ok(set);
    };
    push_selector(&mut set, "cgroup", &format!("path:{path}"));
    if let Some(unit) = systemd_unit(path) {
        push_selector(&mut set, "systemd", &format!("unit:{unit}"));
        push_selector(&mut set, "systemd", &format!("id:{unit}"));
    }
    Ok(set)
}

/// The path that says where the process is: the unified (v2) hierarchy's, which hybrid hosts
/// also track processes in, else systemd's named v1 hierarchy. Paths that are not UTF-8 cannot be
/// written in an entry and give nothing.
fn primary_path(lines: &[CgroupLine]) -> Option<&str> {
    lines
        .iter()
        .find(|line| line.is_unified())
        .or_else(|| lines.iter().find(|line| line.is_systemd_v1()))
        .and_then(CgroupLine::path_str)
}

/// The system manager's unit for a cgroup path (see the module comment).
pub(crate) fn systemd_unit(path: &str) -> Option<&str> {
    let component = path
        .split('/')
        .filter(|c| !c.is_empty())
        .find(|c| !c.ends_with(".slice"))?;
    let is_unit = UNIT_SUFFIXES
        .iter()
        .any(|suffix| component.len() > suffix.len() && component.ends_with(suffix));
    // systemd's unit-name alphabet; `\` appears in escaped names such as `foo\x2dbar.service`.
    let valid = component.len() <= 255
        && component
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, ':' | '-' | '_' | '.' | '\\' | '@'));
    (is_unit && valid).then_some(component)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

    use super::*;

    #[test]
    fn units() {
        assert_eq!(
            systemd_unit("/system.slice/nginx.service"),
            Some("nginx.service")
        );
        assert_eq!(
            systemd_unit("/system.slice/nginx.service/worker"),
            Some("nginx.service")
        );
        assert_eq!(
            systemd_unit("/user.slice/user-1000.slice/user@1000.service/app.slice/web.service"),
            Some("user@1000.service")
        );
        assert_eq!(
            systemd_unit("/user.slice/user-1000.slice/session-3.scope"),
            Some("session-3.scope")
        );
        assert_eq!(systemd_unit("/init.scope"), Some("init.scope"));
        assert_eq!(
            systemd_unit("/system.slice/foo\\x2dbar.service"),
            Some("foo\\x2dbar.service")
        );
        assert_eq!(systemd_unit("/"), None);
        assert_eq!(systemd_unit("/system.slice"), None);
        assert_eq!(systemd_unit("/docker/0123abcd"), None);
        assert_eq!(systemd_unit("/../system.slice/nginx.service"), None);
        assert_eq!(systemd_unit("/.service"), None);
        assert_eq!(systemd_unit("/system.slice/bad unit.service"), None);
    }
}
