//! The rendered CIB of the example pair: golden files (reviewed against
//! firstboot/doc/HA.md, "pacemaker" and "Fencing") and pacemaker's own
//! validator, in both fencing modes.
//!
//! Regenerate the golden files after a deliberate change with
//! `NIB_UPDATE_GOLDEN=1 cargo test -p nib-firstboot --test cluster_cib`.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use nib_firstboot::pacemaker::{CibParams, Fencing, Secrets};
use nib_firstboot::role::{ClusterSpec, Pair};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

fn pair(rel: &str) -> Pair {
    let path = repo().join(rel);
    let text = std::fs::read_to_string(&path).expect("fixture");
    let spec = ClusterSpec::from_toml(&text, rel).expect("fixture parses");
    spec.validate().expect("fixture is valid role data")
}

fn none_params() -> CibParams {
    CibParams::new(&pair("tests/fixtures/cluster.toml"))
}

fn ipmi_params() -> CibParams {
    CibParams::new(&pair("tests/fixtures/cib/cluster-ipmi.toml"))
}

/// Compares with the golden file, printing both in full on a difference.
fn golden(name: &str, actual: &str) {
    let path = repo().join("tests/fixtures/cib").join(name);
    if std::env::var_os("NIB_UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, actual).expect("write golden");
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (NIB_UPDATE_GOLDEN=1 creates it)", path.display()));
    assert!(
        expected == actual,
        "{} differs from the rendering.\n--- golden\n{expected}\n--- rendered\n{actual}",
        path.display()
    );
}

/// `crm_verify --xml-file` on the rendering; returns its combined output.
fn crm_verify(xml: &str) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("cib.xml");
    std::fs::write(&file, xml).expect("write cib");
    let out = Command::new("crm_verify")
        .arg("--verbose")
        .arg("--xml-file")
        .arg(&file)
        .env("LC_ALL", "C")
        .output()
        .expect("crm_verify runs (Debian package pacemaker-cli-utils; `make deps`)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "crm_verify rejected the CIB ({}):\n{text}\n--- CIB\n{xml}",
        out.status
    );
    text
}

#[test]
fn golden_fencing_none() {
    let p = none_params();
    golden("fencing-none.xml", &p.render(Secrets::Mask).unwrap());
}

#[test]
fn golden_fencing_ipmi() {
    let p = ipmi_params();
    golden("fencing-ipmi.xml", &p.render(Secrets::Mask).unwrap());
}

#[test]
fn crm_verify_accepts_fencing_none() {
    let xml = none_params().render(Secrets::Include).unwrap();
    let out = crm_verify(&xml);
    assert!(!out.contains("error"), "{out}");
}

#[test]
fn crm_verify_accepts_fencing_ipmi() {
    let xml = ipmi_params().render(Secrets::Include).unwrap();
    let out = crm_verify(&xml);
    assert!(!out.contains("error"), "{out}");
}

#[test]
fn fencing_modes_differ_where_they_should() {
    let none = none_params().render(Secrets::Include).unwrap();
    let ipmi = ipmi_params().render(Secrets::Include).unwrap();
    assert!(none.contains(r#"name="stonith-enabled" value="false""#));
    assert!(ipmi.contains(r#"name="stonith-enabled" value="true""#));
    assert!(!none.contains("fence_ipmilan"));
    // One device per node, each kept off the node it fences, and only the
    // device that fences the bootstrap node waits (the backup loses a race).
    for n in ["controller01", "controller02"] {
        assert!(ipmi.contains(&format!(
            r#"<primitive id="fence-{n}" class="stonith" type="fence_ipmilan">"#
        )));
        assert!(ipmi.contains(&format!(r#"rsc="fence-{n}" node="{n}" score="-INFINITY""#)));
        assert!(ipmi.contains(&format!(r#"name="pcmk_host_list" value="{n}""#)));
    }
    // Without an arbiter both halves of a split fence: the node of the
    // promoted MariaDB wins (priority-fencing-delay, the clone's
    // priority), ties and focal's pacemaker go to the bootstrap node
    // (the static delay on the device that fences it only).
    assert!(ipmi.contains(
        r#"<nvpair id="fence-controller01-instance_attributes-pcmk_delay_base" name="pcmk_delay_base" value="5s"/>"#
    ));
    assert!(!ipmi.contains("fence-controller02-instance_attributes-pcmk_delay"));
    assert!(!ipmi.contains("pcmk_delay_max"));
    assert!(ipmi.contains(r#"name="priority-fencing-delay" value="10s""#));
    assert!(ipmi.contains(r#"name="stonith-action" value="reboot""#));
    for xml in [&none, &ipmi] {
        assert!(xml.contains(
            r#"<nvpair id="mariadb-clone-meta_attributes-priority" name="priority" value="1"/>"#
        ));
    }
    assert!(!none.contains("priority-fencing-delay") && !none.contains("stonith-action"));
}

#[test]
fn with_an_arbiter_fencing_has_no_race_delays() {
    // Only the quorate partition fences, and qdevice lets one be quorate:
    // a delay would only slow the fencing of a dead primary.
    let mut p = ipmi_params();
    p.quorum_device = true;
    let xml = p.render(Secrets::Include).unwrap();
    assert!(xml.contains(r#"name="stonith-enabled" value="true""#));
    assert!(!xml.contains("pcmk_delay") && !xml.contains("priority-fencing-delay"));
    assert!(!p.split_brain_possible() && !p.fence_race());
    let out = crm_verify(&xml);
    assert!(!out.contains("error"), "{out}");
    // mode none with an arbiter: no fencing, no split brain
    let mut p = none_params();
    assert!(p.split_brain_possible());
    p.quorum_device = true;
    assert!(!p.split_brain_possible());
    assert!(p
        .render(Secrets::Include)
        .unwrap()
        .contains(r#"name="stonith-enabled" value="false""#));
}

/// The `parameter name="…"` entries of a program's metadata.
fn metadata_names(program: &str, args: &[&str]) -> Vec<String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program} {args:?}: {e} (pacemaker, fence-agents)"));
    assert!(out.status.success(), "{program} {args:?}: {}", out.status);
    String::from_utf8_lossy(&out.stdout)
        .split("<parameter name=\"")
        .skip(1)
        .filter_map(|t| t.split('"').next().map(str::to_string))
        .collect()
}

#[test]
fn every_fencing_option_is_one_pacemaker_and_fence_ipmilan_know() {
    // pacemaker ignores an unknown cluster option or device parameter in
    // silence (crm_verify accepts "priority-fencng-delay"), so the names
    // are checked against the daemons' and the agent's own metadata.
    let xml = ipmi_params().render(Secrets::Include).unwrap();
    let names = |section: &str, end: &str| -> Vec<String> {
        let body = &xml[xml.find(section).expect(section)..];
        let body = &body[..body.find(end).expect(end)];
        body.split(" name=\"")
            .skip(1)
            .filter_map(|t| t.split('"').next().map(str::to_string))
            .collect()
    };
    let mut cluster_options = Vec::new();
    for d in [
        "pacemaker-schedulerd",
        "pacemaker-controld",
        "pacemaker-fenced",
    ] {
        cluster_options.extend(metadata_names(
            &format!("/usr/lib/pacemaker/{d}"),
            &["metadata"],
        ));
    }
    let props = names("<cluster_property_set", "</cluster_property_set>");
    assert!(
        props.contains(&"priority-fencing-delay".to_string()),
        "{props:?}"
    );
    for p in &props {
        assert!(
            cluster_options.contains(p),
            "cluster option {p:?} is not pacemaker's"
        );
    }
    let mut device_params = metadata_names("fence_ipmilan", &["-o", "metadata"]);
    device_params.extend(metadata_names(
        "/usr/lib/pacemaker/pacemaker-fenced",
        &["metadata"],
    ));
    let dev = |node: &str| {
        names(
            &format!("<primitive id=\"fence-{node}\""),
            "</instance_attributes>",
        )
    };
    let (one, two) = (dev("controller01"), dev("controller02"));
    assert!(one.contains(&"pcmk_delay_base".to_string()), "{one:?}");
    assert!(two.contains(&"cipher".to_string()), "{two:?}");
    for p in one.iter().chain(&two) {
        assert!(
            device_params.contains(p),
            "fence device parameter {p:?} is unknown"
        );
    }
}

#[test]
fn no_quorum_ignore_from_the_seeds() {
    for xml in [
        none_params().render(Secrets::Include).unwrap(),
        ipmi_params().render(Secrets::Include).unwrap(),
    ] {
        assert!(
            !xml.contains("ignore"),
            "seed 002's no-quorum-policy=ignore crept in"
        );
        assert!(xml.contains(r#"name="no-quorum-policy" value="stop""#));
    }
}

#[test]
fn secrets_only_when_asked_for() {
    let p = ipmi_params();
    let secrets: Vec<String> = p.secrets().iter().map(|s| s.to_string()).collect();
    assert_eq!(
        secrets.len(),
        3,
        "replication password and two BMC passwords"
    );
    let masked = p.render(Secrets::Mask).unwrap();
    let full = p.render(Secrets::Include).unwrap();
    for s in &secrets {
        assert!(
            !masked.contains(s.as_str()),
            "masked rendering leaks a secret"
        );
        assert_eq!(
            full.matches(s.as_str()).count(),
            1,
            "each secret once, in its nvpair"
        );
    }
    assert!(full.contains(r#"name="replication_passwd" value="k2K8vAjIlfbokOvfnNLWYPQf""#));
}

#[test]
fn values_are_xml_escaped() {
    let mut p = none_params();
    p.replication_password = nib_firstboot::pacemaker::Secret::new(r#"a"b<c&d'"#);
    let xml = p.render(Secrets::Include).unwrap();
    assert!(
        xml.contains(r#"value="a&quot;b&lt;c&amp;d&apos;""#),
        "{xml}"
    );
    crm_verify(&xml);
}

#[test]
fn ipv6_pair_renders_and_verifies() {
    let mut p = none_params();
    p.nodes[0].address = "fd00::11".parse().unwrap();
    p.nodes[1].address = "fd00::12".parse().unwrap();
    p.vip.address = "fd00::10".parse().unwrap();
    p.vip.prefix = 64;
    let xml = p.render(Secrets::Include).unwrap();
    assert!(xml.contains(r#"name="ip" value="fd00::10""#));
    assert!(xml.contains(r#"name="cidr_netmask" value="64""#));
    crm_verify(&xml);
    assert!(matches!(p.fencing, Fencing::None));
}

/// `xmllint --relaxng` with pacemaker's frozen schema `name`; (valid, output).
fn relaxng(schema: &str, xml: &str) -> (bool, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("cib.xml");
    std::fs::write(&file, xml).expect("write cib");
    let out = Command::new("xmllint")
        .arg("--noout")
        .arg("--relaxng")
        .arg(format!("/usr/share/pacemaker/{schema}"))
        .arg(&file)
        .output()
        .expect("xmllint (Debian package libxml2-utils)");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// pacemaker-3.2 is the newest schema pacemaker 2.0.3 (Ubuntu focal) knows;
/// schemas never change once released, so bookworm's copy is focal's. The
/// rendering is valid there, and the 2.1 role names would not be: this is
/// why the template says Master/Slave (2.1 accepts both).
#[test]
fn focal_schema_accepts_the_rendering_and_rejects_new_role_names() {
    for p in [none_params(), ipmi_params()] {
        let xml = p.render(Secrets::Include).unwrap();
        let (ok, out) = relaxng("pacemaker-3.2.rng", &xml);
        assert!(ok, "pacemaker-3.2 schema rejects the CIB:\n{out}");
        let renamed = xml
            .replace(r#"role="Master""#, r#"role="Promoted""#)
            .replace(r#"role="Slave""#, r#"role="Unpromoted""#);
        let (ok, _) = relaxng("pacemaker-3.2.rng", &renamed);
        assert!(
            !ok,
            "Promoted/Unpromoted unexpectedly valid for pacemaker 2.0"
        );
    }
}

/// RabbitMQ follows quorum (firstboot/doc/HA.md, "RabbitMQ"): the broker is
/// a clone of ocf:nib:rabbitmq (its own systemd unit) on both nodes, which
/// the image boots only once quorate, under no-quorum-policy=stop; node events go to the
/// alert agent the rabbitmq layer installs.
#[test]
fn rabbitmq_is_a_pacemaker_clone_with_the_node_alert() {
    for p in [none_params(), ipmi_params()] {
        let xml = p.render(Secrets::Include).unwrap();
        let doc = roxmltree::Document::parse(&xml).unwrap();
        let by_id = |id: &str| {
            doc.descendants()
                .find(|n| n.attribute("id") == Some(id))
                .unwrap_or_else(|| panic!("no {id} in:\n{xml}"))
        };
        let rsc = by_id("rabbitmq");
        assert_eq!(rsc.tag_name().name(), "primitive");
        assert_eq!(rsc.attribute("class"), Some("ocf"));
        assert_eq!(rsc.attribute("provider"), Some("nib"));
        assert_eq!(rsc.attribute("type"), Some("rabbitmq"));
        let agent = repo()
            .join("layers/rabbitmq/files")
            .join(nib_firstboot::pacemaker::render::RABBITMQ_AGENT.trim_start_matches('/'));
        assert!(agent.is_file(), "{}", agent.display());
        let clone = rsc.parent().unwrap();
        assert_eq!(clone.attribute("id"), Some("rabbitmq-clone"));
        assert_eq!(clone.tag_name().name(), "clone");
        assert_eq!(
            by_id("cib-bootstrap-options-no-quorum-policy").attribute("value"),
            Some("stop")
        );
        let alert = by_id("nib-rabbitmq-peer-lost");
        let path = alert.attribute("path").unwrap();
        assert!(
            repo()
                .join("layers/rabbitmq/files")
                .join(path.trim_start_matches('/'))
                .is_file(),
            "{path} is not in layers/rabbitmq/files"
        );
        assert!(
            alert.descendants().any(|n| n.has_tag_name("select_nodes")),
            "{xml}"
        );
        assert!(p.managed_ids().contains(&"rabbitmq-clone".to_string()));
    }
    let layer = std::fs::read_to_string(repo().join("layers/rabbitmq/layer.toml")).unwrap();
    // systemd boots the broker too, held until the node is quorate
    // (rabbitmq_peer_lost.rs checks the hold)
    assert!(
        layer.contains("enable = [\"rabbitmq-server.service\""),
        "{layer}"
    );
}

/// pacemaker's own scheduler on the rendered CIB: both nodes up, MariaDB
/// promoted on `promoted`, then `failed` lost; returns the
/// `priority_fencing_delay` the transition gives the fencing of `failed`.
fn simulated_fence_delay(xml: &str, promoted: &str, failed: &str) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    let step = |from: &str, to: &str, extra: &[&str]| {
        let out = Command::new("crm_simulate")
            .arg("-x")
            .arg(dir.path().join(from))
            .args(extra)
            .arg("-S")
            .arg("-O")
            .arg(dir.path().join(to))
            .env("LC_ALL", "C")
            .output()
            .expect("crm_simulate (pacemaker-cli-utils)");
        assert!(
            out.status.success(),
            "crm_simulate: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    // the pair as corosync leaves it: quorate with both nodes
    std::fs::write(
        dir.path().join("0.xml"),
        xml.replacen("<cib ", "<cib have-quorum=\"1\" ", 1),
    )
    .expect("write");
    step(
        "0.xml",
        "1.xml",
        &["--node-up", "controller01", "--node-up", "controller02"],
    );
    // the promotion score the agent gives the primary
    let out = Command::new("crm_attribute")
        .args([
            "-N",
            promoted,
            "-n",
            "master-mariadb",
            "-v",
            "100",
            "-l",
            "reboot",
        ])
        .env("CIB_file", dir.path().join("1.xml"))
        .output()
        .expect("crm_attribute");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    step("1.xml", "2.xml", &[]);
    let graph = dir.path().join("graph.xml");
    let out = Command::new("crm_simulate")
        .arg("-x")
        .arg(dir.path().join("2.xml"))
        .args(["--node-fail", failed, "-S", "-G"])
        .arg(&graph)
        .env("LC_ALL", "C")
        .output()
        .expect("crm_simulate");
    let status = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        status.contains(&format!("Promoted: [ {promoted} ]")),
        "{promoted} was not promoted:\n{status}"
    );
    let g = std::fs::read_to_string(&graph).expect("graph");
    let fence = g
        .split("<rsc_op ")
        .chain(g.split("<crm_event "))
        .find(|e| {
            e.contains(&format!("stonith-{failed}-reboot")) && e.contains("priority_fencing_delay")
        })
        .unwrap_or_else(|| panic!("no reboot of {failed} in the graph:\n{g}"));
    fence
        .split("CRM_meta_priority_fencing_delay=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .expect("delay")
        .to_string()
}

#[test]
fn the_scheduler_delays_only_the_fencing_of_the_promoted_node() {
    let xml = ipmi_params().render(Secrets::Include).unwrap();
    // controller01 (bootstrap) promoted: fencing it waits, fencing the replica not
    assert_eq!(
        simulated_fence_delay(&xml, "controller01", "controller01"),
        "10"
    );
    assert_eq!(
        simulated_fence_delay(&xml, "controller01", "controller02"),
        "0"
    );
    // after a failover the other way round: priority follows the primary
    assert_eq!(
        simulated_fence_delay(&xml, "controller02", "controller02"),
        "10"
    );
    assert_eq!(
        simulated_fence_delay(&xml, "controller02", "controller01"),
        "0"
    );
    // the control: without the clone's priority, no node is favoured
    let without = xml.replace(
        r#"<nvpair id="mariadb-clone-meta_attributes-priority" name="priority" value="1"/>"#,
        "",
    );
    assert_eq!(
        simulated_fence_delay(&without, "controller01", "controller01"),
        "0"
    );
}
