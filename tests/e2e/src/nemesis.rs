//! The fault suite's nemesis: faults injected from outside the nodes.
//!
//! - A link cut between switch ports: nftables rules of the `bridge` family
//!   in the switch netns drop every frame forwarded from one port to the
//!   other (both directions; ARP and flooded frames too: the bridge's
//!   forward hook sees each copy per output port). Every other port keeps
//!   its path, so the two controllers lose each other while both still
//!   reach the client (and a future arbiter host on its own port). Heal
//!   deletes the table.
//! - A power cut: the node's link down and its PID 1 killed
//!   ([`crate::node::Node::kill`]), as `scenario::failover` does.
//!
//! [`ping_matrix`] shows what a cut really is, from every namespace to
//! every address.

use std::thread;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use nib_host::Cmd;

use crate::net::Netns;

/// The nftables table the nemesis owns in the switch netns.
pub const TABLE: &str = "nibe2e_nemesis";

/// The ruleset that drops bridged frames between each pair of ports in
/// `blocked`, both ways. Loaded with `nft -f`: the leading `table` +
/// `delete table` make loading it replace an earlier cut atomically.
pub fn cut_ruleset(blocked: &[(&str, &str)]) -> String {
    let mut rules = String::new();
    for (a, b) in blocked {
        for (i, o) in [(a, b), (b, a)] {
            rules.push_str(&format!(
                "\t\tiifname \"{i}\" oifname \"{o}\" counter drop\n"
            ));
        }
    }
    format!(
        "table bridge {TABLE}\n\
         delete table bridge {TABLE}\n\
         table bridge {TABLE} {{\n\
         \tchain forward {{\n\
         \t\ttype filter hook forward priority -200; policy accept;\n\
         {rules}\
         \t}}\n\
         }}\n"
    )
}

fn nft(switch: &Netns, args: &[&str], input: Option<String>) -> Result<String> {
    let mut c = Cmd::new("ip")
        .args(["netns", "exec", switch.name(), "nft"])
        .args(args)
        .timeout(Duration::from_secs(10));
    if let Some(i) = input {
        c = c.input(i);
    }
    Ok(c.stdout_text()?)
}

/// Cut the links between each pair of switch ports in `blocked`.
pub fn cut(switch: &Netns, blocked: &[(&str, &str)]) -> Result<()> {
    let rules = cut_ruleset(blocked);
    nft(switch, &["-f", "-"], Some(rules.clone()))
        .with_context(|| format!("loading the cut into {}:\n{rules}", switch.name()))?;
    crate::log(&format!(
        "NEMESIS cut {blocked:?} (nft table bridge {TABLE} in {})",
        switch.name()
    ));
    Ok(())
}

/// Remove every cut (no-op when there is none).
pub fn heal(switch: &Netns) -> Result<()> {
    let tables = nft(switch, &["list", "tables", "bridge"], None)?;
    if tables
        .lines()
        .any(|l| l.trim() == format!("table bridge {TABLE}"))
    {
        nft(switch, &["delete", "table", "bridge", TABLE], None)?;
    }
    crate::log(&format!("NEMESIS heal: nft table bridge {TABLE} removed"));
    Ok(())
}

/// The cut as loaded, with its counters (for the logs).
pub fn listing(switch: &Netns) -> Result<String> {
    nft(switch, &["list", "table", "bridge", TABLE], None)
}

/// A place to ping from and to: a name, its netns, its address.
#[derive(Debug, Clone)]
pub struct Host {
    pub name: String,
    pub netns: String,
    pub address: String,
}

/// One cell of the matrix: did `from` get an echo reply from `to`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reach {
    pub from: String,
    pub to: String,
    pub ok: bool,
}

/// Ping (ICMP echo, 2 tries, 1 s each) from every host's netns to every
/// other host's address, all at once; the host's own `ping` in each netns.
pub fn ping_matrix(hosts: &[Host]) -> Vec<Reach> {
    thread::scope(|s| {
        let mut jobs = Vec::new();
        for f in hosts {
            for t in hosts.iter().filter(|t| t.name != f.name) {
                jobs.push(s.spawn(move || {
                    let ok = Cmd::new("ip")
                        .args(["netns", "exec", &f.netns, "ping", "-n", "-q", "-c", "2"])
                        .args(["-i", "0.2", "-W", "1", &t.address])
                        .timeout(Duration::from_secs(10))
                        .unlogged()
                        .output_unchecked()
                        .is_ok_and(|o| o.success());
                    Reach {
                        from: f.name.clone(),
                        to: t.name.clone(),
                        ok,
                    }
                }));
            }
        }
        jobs.into_iter().filter_map(|j| j.join().ok()).collect()
    })
}

/// The matrix as a table: a row per source, `ok` / `--` per target.
pub fn format_matrix(m: &[Reach]) -> String {
    let mut names: Vec<&str> = Vec::new();
    for r in m {
        for n in [r.from.as_str(), r.to.as_str()] {
            if !names.contains(&n) {
                names.push(n);
            }
        }
    }
    let w = names.iter().map(|n| n.len()).max().unwrap_or(4).max(4);
    let mut out = format!("{:w$}", "from\\to");
    for n in &names {
        out.push_str(&format!(" {n:>w$}"));
    }
    out.push('\n');
    for f in &names {
        out.push_str(&format!("{f:w$}"));
        for t in &names {
            let cell = if f == t {
                "."
            } else {
                match m.iter().find(|r| r.from == *f && r.to == *t) {
                    Some(r) if r.ok => "ok",
                    Some(_) => "--",
                    None => "?",
                }
            };
            out.push_str(&format!(" {cell:>w$}"));
        }
        out.push('\n');
    }
    out
}

/// The matrix is exactly what a cut between the pairs in `cut` claims:
/// those pairs reach each other in neither direction, every other pair
/// does in both.
pub fn matrix_is(m: &[Reach], cut: &[(&str, &str)]) -> Result<()> {
    let is_cut = |a: &str, b: &str| {
        cut.iter()
            .any(|(x, y)| (*x == a && *y == b) || (*x == b && *y == a))
    };
    let wrong: Vec<String> = m
        .iter()
        .filter(|r| r.ok == is_cut(&r.from, &r.to))
        .map(|r| {
            format!(
                "{} → {} {}",
                r.from,
                r.to,
                if r.ok {
                    "reaches (should be cut)"
                } else {
                    "does not reach"
                }
            )
        })
        .collect();
    if !wrong.is_empty() {
        bail!("reachability is not the cut {cut:?}: {}", wrong.join("; "));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cut_ruleset_drops_both_directions_between_the_two_ports_only() {
        let r = cut_ruleset(&[("v1", "v2")]);
        assert_eq!(
            r,
            "table bridge nibe2e_nemesis\n\
             delete table bridge nibe2e_nemesis\n\
             table bridge nibe2e_nemesis {\n\
             \tchain forward {\n\
             \t\ttype filter hook forward priority -200; policy accept;\n\
             \t\tiifname \"v1\" oifname \"v2\" counter drop\n\
             \t\tiifname \"v2\" oifname \"v1\" counter drop\n\
             \t}\n\
             }\n"
        );
        assert!(!r.contains("vc"), "the client's port is never cut");
    }

    #[test]
    fn cut_ruleset_of_several_pairs_and_of_none() {
        let r = cut_ruleset(&[("v1", "v2"), ("v1", "va")]);
        assert_eq!(r.matches(" drop\n").count(), 4);
        assert!(r.contains("iifname \"va\" oifname \"v1\""), "{r}");
        // no pair: an empty accepting chain (heals when loaded)
        let none = cut_ruleset(&[]);
        assert!(!none.contains("drop"), "{none}");
        assert!(none.contains("policy accept;"), "{none}");
    }

    fn reach(from: &str, to: &str, ok: bool) -> Reach {
        Reach {
            from: from.into(),
            to: to.into(),
            ok,
        }
    }

    fn cut_matrix() -> Vec<Reach> {
        vec![
            reach("c1", "c2", false),
            reach("c2", "c1", false),
            reach("c1", "client", true),
            reach("client", "c1", true),
            reach("c2", "client", true),
            reach("client", "c2", true),
        ]
    }

    #[test]
    fn matrix_matches_the_cut_it_claims() {
        let m = cut_matrix();
        matrix_is(&m, &[("c1", "c2")]).expect("is the cut");
        let e = matrix_is(&m, &[]).expect_err("not healed");
        assert!(e.to_string().contains("c1 → c2 does not reach"), "{e}");
        let mut leaky = m.clone();
        leaky[1].ok = true;
        let e = matrix_is(&leaky, &[("c1", "c2")]).expect_err("one way open");
        assert!(
            e.to_string().contains("c2 → c1 reaches (should be cut)"),
            "{e}"
        );
        let mut lonely = m;
        lonely[2].ok = false;
        let e = matrix_is(&lonely, &[("c1", "c2")]).expect_err("client lost");
        assert!(e.to_string().contains("c1 → client does not reach"), "{e}");
    }

    #[test]
    fn matrix_table() {
        let t = format_matrix(&cut_matrix());
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 4, "{t}");
        assert!(lines[0].starts_with("from\\to"), "{t}");
        let c1: Vec<&str> = lines[1].split_whitespace().collect();
        assert_eq!(c1, ["c1", ".", "--", "ok"], "{t}");
        let client: Vec<&str> = lines[3].split_whitespace().collect();
        assert_eq!(client, ["client", "ok", "ok", "."], "{t}");
    }
}
