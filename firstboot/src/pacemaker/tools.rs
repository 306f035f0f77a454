//! The cluster's own command-line tools, as `cluster` and `status` use them.
//! Behind a trait so tests can run them inside a network namespace (or not
//! at all).

use anyhow::{anyhow, Result};

use super::diff::CibOp;
use super::render::MASK;
use crate::render::mariadb_paths;
use nib_host::Cmd;

/// Pacemaker's and corosync's tools. Every method returns an error whose
/// text never contains a secret.
pub trait ClusterTools {
    /// `corosync-quorumtool -s`: its output when quorate, an error when not
    /// quorate or when corosync does not answer.
    fn quorum_status(&self) -> Result<String>;
    /// `cibadmin --query`: the whole CIB.
    fn cib_query(&self) -> Result<String>;
    /// One `cibadmin` write; the XML goes through stdin.
    fn cib_apply(&self, op: &CibOp) -> Result<()>;
    /// `crm_mon -1 --output-as=xml` (pacemaker 2.0.3 and later).
    fn crm_mon_xml(&self) -> Result<String>;
    /// A transient (until reboot) node attribute, None when unset.
    fn node_attribute(&self, node: &str, name: &str) -> Result<Option<String>>;
    fn set_node_attribute(&self, node: &str, name: &str, value: &str) -> Result<()>;
    /// A private attrd attribute (not in the CIB), None when unset.
    fn private_attribute(&self, node: &str, name: &str) -> Result<Option<String>>;
    /// SQL on the local MariaDB as root over its socket; stdout in batch
    /// mode (`-B`: a tab-separated header line, then rows; see
    /// [`parse_batch`]).
    fn local_sql(&self, sql: &str) -> Result<String>;
}

/// The tools of the running system. `prefix` runs each through a wrapper
/// (`nsenter -t PID -a --` in tests); `secrets` are cut out of any error.
#[derive(Debug, Clone, Default)]
pub struct SystemTools {
    pub prefix: Vec<String>,
    secrets: Vec<String>,
}

impl SystemTools {
    pub fn new(secrets: &[&str]) -> Self {
        SystemTools {
            prefix: Vec::new(),
            secrets: secrets.iter().map(|s| s.to_string()).collect(),
        }
    }

    pub fn with_prefix(mut self, prefix: Vec<String>) -> Self {
        self.prefix = prefix;
        self
    }

    fn command(&self, program: &str, args: &[&str]) -> Cmd {
        let cmd = match self.prefix.split_first() {
            Some((first, rest)) => Cmd::new(first).args(rest).arg(program),
            None => Cmd::new(program),
        };
        // Tools print dates and messages; keep them parseable.
        cmd.args(args).env("LC_ALL", "C")
    }

    /// Runs and returns stdout; the error is scrubbed of secrets.
    fn output(&self, program: &str, args: &[&str], input: Option<&str>) -> Result<String> {
        let cmd = self.command(program, args);
        let out = match input {
            Some(text) => cmd.input(text.as_bytes()).output(),
            None => cmd.output(),
        };
        match out {
            Ok(out) => Ok(String::from_utf8_lossy(&out.stdout).into_owned()),
            Err(e) => Err(anyhow!(scrub(&format!("{e:#}"), &self.secrets))),
        }
    }
}

/// Replaces every secret in `text` by the mask.
pub fn scrub(text: &str, secrets: &[String]) -> String {
    let mut out = text.to_string();
    for s in secrets.iter().filter(|s| !s.is_empty()) {
        out = out.replace(s.as_str(), MASK);
    }
    out
}

/// The last result set of `mysql -B` output as column -> value maps.
pub fn parse_batch(output: &str) -> Vec<std::collections::BTreeMap<String, String>> {
    let lines: Vec<&str> = output.lines().collect();
    let Some(header) = lines.first() else {
        return Vec::new();
    };
    let cols: Vec<&str> = header.split('\t').collect();
    lines[1..]
        .iter()
        .map(|row| {
            cols.iter()
                .zip(row.split('\t'))
                .map(|(c, v)| (c.to_string(), v.to_string()))
                .collect()
        })
        .collect()
}

/// `value="…"` out of `attrd_updater -Q` / `crm_attribute -G` output.
fn attribute_value(output: &str) -> Option<String> {
    let start = output.find("value=")? + "value=".len();
    let rest = &output[start..];
    let value = match rest.strip_prefix('"') {
        Some(quoted) => quoted.split('"').next().unwrap_or(""),
        None => rest.split_whitespace().next().unwrap_or(""),
    };
    (!value.is_empty() && value != "(null)").then(|| value.to_string())
}

impl ClusterTools for SystemTools {
    fn quorum_status(&self) -> Result<String> {
        self.output("corosync-quorumtool", &["-s"], None)
    }

    fn cib_query(&self) -> Result<String> {
        self.output("cibadmin", &["--query"], None)
    }

    fn cib_apply(&self, op: &CibOp) -> Result<()> {
        let (args, xml): (Vec<&str>, &str) = match op {
            CibOp::Modify { xml } => (vec!["--modify", "--xml-pipe"], xml),
            CibOp::Replace { section, xml, .. } => {
                (vec!["--replace", "--scope", section, "--xml-pipe"], xml)
            }
            CibOp::Delete { section, xml, .. } => {
                (vec!["--delete", "--scope", section, "--xml-pipe"], xml)
            }
        };
        self.output("cibadmin", &args, Some(xml)).map(|_| ())
    }

    fn crm_mon_xml(&self) -> Result<String> {
        self.output("crm_mon", &["-1", "--output-as=xml"], None)
    }

    fn node_attribute(&self, node: &str, name: &str) -> Result<Option<String>> {
        // Exit code 105 (no such attribute) is not an error here.
        match self.output(
            "crm_attribute",
            &[
                "--node",
                node,
                "--name",
                name,
                "--lifetime",
                "reboot",
                "--query",
            ],
            None,
        ) {
            Ok(out) => Ok(attribute_value(&out)),
            Err(e) if format!("{e:#}").contains("No such device or address") => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn set_node_attribute(&self, node: &str, name: &str, value: &str) -> Result<()> {
        self.output(
            "crm_attribute",
            &[
                "--node",
                node,
                "--name",
                name,
                "--lifetime",
                "reboot",
                "--update",
                value,
            ],
            None,
        )
        .map(|_| ())
    }

    fn private_attribute(&self, node: &str, name: &str) -> Result<Option<String>> {
        match self.output(
            "attrd_updater",
            &["--private", "--node", node, "--name", name, "--query"],
            None,
        ) {
            Ok(out) => Ok(attribute_value(&out)),
            // Never set on that node: attrd answers "not found".
            Err(e) if format!("{e:#}").contains("does not exist") => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn local_sql(&self, sql: &str) -> Result<String> {
        // On stdin: the statement is not a secret, but this keeps the
        // logged command line short and free of quoting.
        self.output("mysql", &["-B", "-S", mariadb_paths::SOCKET], Some(sql))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn attribute_value_parses_both_tools() {
        assert_eq!(
            attribute_value(r#"name="mariadb-gtid" host="controller01" value="0-1-5""#),
            Some("0-1-5".into())
        );
        assert_eq!(
            attribute_value("scope=status  name=master-mariadb value=100\n"),
            Some("100".into())
        );
        assert_eq!(attribute_value(r#"name="x" host="n" value="""#), None);
        assert_eq!(attribute_value("nothing"), None);
    }

    #[test]
    fn batch_output_becomes_rows() {
        let rows = parse_batch("Slave_IO_Running\tSlave_SQL_Running\nYes\tNo\n");
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0]["Slave_IO_Running"], "Yes");
        assert_eq!(rows[0]["Slave_SQL_Running"], "No");
        assert!(parse_batch("").is_empty());
    }

    #[test]
    fn scrub_masks_every_secret() {
        let s = scrub(
            "pw=abc and abc, key=xyz",
            &["abc".into(), "xyz".into(), "".into()],
        );
        assert_eq!(s, "pw=*** and ***, key=***");
    }

    #[test]
    fn prefix_wraps_the_tool() {
        let t = SystemTools::new(&[]).with_prefix(vec!["nsenter".into(), "-t".into(), "1".into()]);
        let cmd = t.command("cibadmin", &["--query"]);
        assert_eq!(cmd.shown(), "LC_ALL=C nsenter -t 1 cibadmin --query");
    }
}
