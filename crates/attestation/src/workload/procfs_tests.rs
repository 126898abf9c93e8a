#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use proptest::prelude::*;

use super::*;

const STATUS: &[u8] = b"Name:\tbash\nUmask:\t0022\nState:\tS (sleeping)\nTgid:\t4242\n\
Uid:\t1000\t1001\t1002\t1003\nGid:\t100\t101\t102\t103\nFDSize:\t256\n\
Groups:\t4 24 27 1000 \nNStgid:\t4242\n";

#[test]
fn status_fields() {
    let status = parse_status(STATUS).unwrap();
    assert_eq!(status.uids, [1000, 1001, 1002, 1003]);
    assert_eq!(status.gids, [100, 101, 102, 103]);
    assert_eq!(status.effective_uid(), 1001);
    assert_eq!(status.effective_gid(), 101);
    assert_eq!(status.groups, vec![4, 24, 27, 1000]);
}

#[test]
fn status_with_no_groups() {
    let status = parse_status(b"Uid:\t0\t0\t0\t0\nGid:\t0\t0\t0\t0\nGroups:\t \n").unwrap();
    assert!(status.groups.is_empty());
    let status = parse_status(b"Uid:\t0\t0\t0\t0\nGid:\t0\t0\t0\t0\n").unwrap();
    assert!(status.groups.is_empty());
}

#[test]
fn status_refusals() {
    assert_eq!(
        parse_status(b"Gid:\t0\t0\t0\t0\n"),
        Err(ProcParseError::MissingField { field: "Uid" })
    );
    assert_eq!(
        parse_status(b"Uid:\t0\t0\t0\nGid:\t0\t0\t0\t0\n"),
        Err(ProcParseError::BadNumbers { field: "Uid" })
    );
    assert_eq!(
        parse_status(b"Uid:\t0\t0\t0\t0\t0\nGid:\t0\t0\t0\t0\n"),
        Err(ProcParseError::BadNumbers { field: "Uid" })
    );
    assert_eq!(
        parse_status(b"Uid:\t-1\t0\t0\t0\nGid:\t0\t0\t0\t0\n"),
        Err(ProcParseError::BadNumbers { field: "Uid" })
    );
    assert_eq!(
        parse_status(b"Uid:\t4294967296\t0\t0\t0\nGid:\t0\t0\t0\t0\n"),
        Err(ProcParseError::BadNumbers { field: "Uid" })
    );
    assert_eq!(
        parse_status(b"Uid:\t0\t0\t0\t0\nUid:\t1\t1\t1\t1\nGid:\t0\t0\t0\t0\n"),
        Err(ProcParseError::DuplicateField { field: "Uid" })
    );
    assert_eq!(
        parse_status(b"Uid:\t0\t0\t0\t0\nGid:\t0\t0\t0\t0\nGroups:\t1 x\n"),
        Err(ProcParseError::BadNumbers { field: "Groups" })
    );
}

#[test]
fn status_group_limit() {
    let mut content = b"Uid:\t0\t0\t0\t0\nGid:\t0\t0\t0\t0\nGroups:".to_vec();
    for _ in 0..=MAX_GROUPS {
        content.extend_from_slice(b" 7");
    }
    assert_eq!(
        parse_status(&content),
        Err(ProcParseError::TooManyGroups {
            count: MAX_GROUPS + 1
        })
    );
}

fn stat_line(comm: &[u8], start_time: u64) -> Vec<u8> {
    let mut line = b"4242 (".to_vec();
    line.extend_from_slice(comm);
    line.extend_from_slice(
        format!(
            ") S 1 4242 4242 0 -1 4194560 1180 0 0 0 1 0 0 0 20 0 1 0 {start_time} 8892416 \
             1024 18446744073709551615 1 1 0 0 0 0 65536 4 65538 1 0 0 17 1 0 0 0 0 0\n"
        )
        .as_bytes(),
    );
    line
}

#[test]
fn stat_start_time() {
    assert_eq!(
        parse_stat_start_time(&stat_line(b"bash", 123_456)).unwrap(),
        123_456
    );
}

#[test]
fn stat_start_time_with_hostile_comm() {
    // A process names itself; the parser must not be fooled by `)` or fake fields in the name.
    let comm = b") S 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 999 (";
    assert_eq!(parse_stat_start_time(&stat_line(comm, 77)).unwrap(), 77);
    assert_eq!(
        parse_stat_start_time(&stat_line(b"a\nb )", 78)).unwrap(),
        78
    );
}

#[test]
fn stat_refusals() {
    assert_eq!(
        parse_stat_start_time(b"4242 bash S 1"),
        Err(ProcParseError::StatNoComm)
    );
    assert_eq!(
        parse_stat_start_time(b")4242 (bash S 1"),
        Err(ProcParseError::StatNoComm)
    );
    assert!(matches!(
        parse_stat_start_time(b"4242 (bash) S 1 2 3"),
        Err(ProcParseError::StatTooShort { .. })
    ));
    let mut line = stat_line(b"x", 5);
    let text = String::from_utf8(line.clone())
        .unwrap()
        .replace(" 5 ", " x5 ");
    line = text.into_bytes();
    assert_eq!(
        parse_stat_start_time(&line),
        Err(ProcParseError::BadNumbers { field: "starttime" })
    );
}

#[test]
fn cgroup_v2_and_v1() {
    let lines = parse_cgroup(
        b"12:pids:/user.slice\n1:name=systemd:/system.slice/nginx.service\n\
          4:cpu,cpuacct:/a:b\n0::/system.slice/nginx.service\n",
    )
    .unwrap();
    assert_eq!(lines.len(), 4);
    assert_eq!(lines[0].hierarchy_id, 12);
    assert_eq!(lines[0].controllers, vec!["pids"]);
    assert!(lines[1].is_systemd_v1());
    assert_eq!(lines[2].controllers, vec!["cpu", "cpuacct"]);
    assert_eq!(lines[2].path_str(), Some("/a:b"));
    assert!(lines[3].is_unified());
    assert_eq!(lines[3].path_str(), Some("/system.slice/nginx.service"));
}

#[test]
fn cgroup_refusals() {
    assert_eq!(
        parse_cgroup(b"0::/\n\n"),
        Err(ProcParseError::CgroupLine { line: 2 })
    );
    assert_eq!(
        parse_cgroup(b"x::/\n"),
        Err(ProcParseError::CgroupLine { line: 1 })
    );
    assert_eq!(
        parse_cgroup(b"0:/\n"),
        Err(ProcParseError::CgroupLine { line: 1 })
    );
    assert_eq!(
        parse_cgroup(b"0::relative\n"),
        Err(ProcParseError::CgroupLine { line: 1 })
    );
    assert_eq!(
        parse_cgroup(b"1:cpu,,mem:/\n"),
        Err(ProcParseError::CgroupLine { line: 1 })
    );
    assert_eq!(parse_cgroup(b""), Ok(Vec::new()));
}

proptest! {
    #[test]
    fn status_never_panics(content in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = parse_status(&content);
    }

    #[test]
    fn status_never_panics_on_near_valid_text(
        uid in "[0-9 \t-]{0,40}",
        groups in "[0-9 \tx]{0,60}",
    ) {
        let content = format!("Uid:{uid}\nGid:\t1\t1\t1\t1\nGroups:{groups}\n");
        let _ = parse_status(content.as_bytes());
    }

    #[test]
    fn status_round_trip(uids in any::<[u32; 4]>(), gids in any::<[u32; 4]>(),
                         groups in proptest::collection::vec(any::<u32>(), 0..64)) {
        let list: Vec<String> = groups.iter().map(u32::to_string).collect();
        let content = format!(
            "Name:\tx\nUid:\t{}\t{}\t{}\t{}\nGid:\t{}\t{}\t{}\t{}\nGroups:\t{} \n",
            uids[0], uids[1], uids[2], uids[3], gids[0], gids[1], gids[2], gids[3],
            list.join(" ")
        );
        let status = parse_status(content.as_bytes()).unwrap();
        prop_assert_eq!(status.uids, uids);
        prop_assert_eq!(status.gids, gids);
        prop_assert_eq!(status.groups, groups);
    }

    #[test]
    fn stat_never_panics(content in proptest::collection::vec(any::<u8>(), 0..1024)) {
        let _ = parse_stat_start_time(&content);
    }

    #[test]
    fn stat_finds_start_time_whatever_the_comm(
        comm in proptest::collection::vec(any::<u8>(), 0..64),
        start in any::<u64>(),
    ) {
        prop_assert_eq!(parse_stat_start_time(&stat_line(&comm, start)), Ok(start));
    }

    #[test]
    fn cgroup_never_panics(content in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = parse_cgroup(&content);
    }

    #[test]
    fn cgroup_round_trip(
        lines in proptest::collection::vec(
            (0u32..64, proptest::collection::vec("[a-z_=]{1,12}", 0..3), "(/[^\n/]{0,12}){1,4}"),
            1..8,
        ),
    ) {
        let mut content = String::new();
        for (id, controllers, path) in &lines {
            content.push_str(&format!("{id}:{}:{path}\n", controllers.join(",")));
        }
        let parsed = parse_cgroup(content.as_bytes()).unwrap();
        prop_assert_eq!(parsed.len(), lines.len());
        for (line, (id, controllers, path)) in parsed.iter().zip(&lines) {
            prop_assert_eq!(line.hierarchy_id, *id);
            prop_assert_eq!(&line.controllers, controllers);
            prop_assert_eq!(line.path_str(), Some(path.as_str()));
        }
    }
}
