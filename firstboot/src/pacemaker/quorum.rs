//! `corosync-quorumtool -s`, read.

use std::collections::BTreeSet;

/// What `corosync-quorumtool -s` says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuorumView {
    pub quorate: bool,
    /// Node ids in the membership.
    pub members: BTreeSet<u32>,
}

/// Parses `corosync-quorumtool -s` (corosync 3.0 and 3.1 print the same).
pub fn parse_quorumtool(output: &str) -> QuorumView {
    let mut quorate = false;
    let mut members = BTreeSet::new();
    let mut in_members = false;
    for line in output.lines() {
        let t = line.trim();
        if let Some(v) = t.strip_prefix("Quorate:") {
            quorate = v.trim() == "Yes";
        } else if t.starts_with("Nodeid") {
            in_members = true;
        } else if in_members {
            match t.split_whitespace().next().map(str::parse::<u32>) {
                // the quorum device's line (an arbiter's vote) is node id 0,
                // which no node has: it is not a member
                Some(Ok(0)) => {}
                Some(Ok(id)) => {
                    members.insert(id);
                }
                _ => in_members = false,
            }
        }
    }
    QuorumView { quorate, members }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const TWO: &str = "Quorum information\n------------------\nDate:             Fri Nov 27 22:43:44 2026\nQuorum provider:  corosync_votequorum\nNodes:            2\nNode ID:          1\nRing ID:          1.9\nQuorate:          Yes\n\nVotequorum information\n----------------------\nExpected votes:   2\nHighest expected: 2\nTotal votes:      2\nQuorum:           1  \nFlags:            2Node Quorate WaitForAll \n\nMembership information\n----------------------\n    Nodeid      Votes Name\n         1          1 controller01 (local)\n         2          1 controller02\n";

    #[test]
    fn parses_two_member_quorate_output() {
        let v = parse_quorumtool(TWO);
        assert!(v.quorate);
        assert_eq!(v.members, BTreeSet::from([1, 2]));
    }

    #[test]
    fn parses_lone_node_not_quorate() {
        let lone = TWO
            .replace("Quorate:          Yes", "Quorate:          No")
            .replace("         2          1 controller02\n", "");
        let v = parse_quorumtool(&lone);
        assert!(!v.quorate);
        assert_eq!(v.members, BTreeSet::from([1]));
    }

    /// What corosync-quorumtool printed in validators.rs's live qdevice
    /// test: one node, quorate with qnetd's vote.
    const WITH_QDEVICE: &str = "Quorate:          Yes\n\nVotequorum information\n----------------------\nExpected votes:   2\nHighest expected: 2\nTotal votes:      2\nQuorum:           2  \nFlags:            Quorate Qdevice \n\nMembership information\n----------------------\n    Nodeid      Votes    Qdevice Name\n         1          1    A,V,NMW controller01 (local)\n         0          1            Qdevice\n";

    #[test]
    fn the_quorum_device_is_not_a_member() {
        let v = parse_quorumtool(WITH_QDEVICE);
        assert!(v.quorate);
        assert_eq!(v.members, BTreeSet::from([1]));
    }
}
