//! The quorum arbiter (firstboot/doc/HA.md, "Arbiter"): the TLS material
//! `nib cluster init --arbiter` makes, and `nib arbiter-setup`, which makes
//! an existing Debian/Ubuntu host the pair's corosync-qnetd.
//!
//! The certificates are those `corosync-qnetd-certutil -i` and
//! `corosync-qdevice-net-certutil -r`/`-s` would make, without the manual
//! round trip between the hosts: a CA ("CN=QNet CA"), qnetd's server
//! certificate ("CN=Qnetd Server") and the pair's client certificate
//! (CN = the cluster name, which qnetd checks), ECDSA P-256, valid for 100
//! years as certutil's are (1200 months). The CA's key signs both and is
//! then dropped: nothing signs afterwards, and a key that is not kept
//! cannot leak. Everything is returned as PEM for `[secrets.arbiter]`.

use std::fs;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use nib_firstboot::fsutil::Root;
use nib_firstboot::nssdb::{self, NssDb};
use nib_firstboot::role::{Arbiter, ArbiterSecrets, ClusterSpec, Secret};
use nib_host::Cmd;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SerialNumber,
};

use crate::cli::ArbiterSetupArgs;
use crate::error::invalid;

/// corosync-qnetd's unit drop-in: TLS and a client certificate required
/// (the image's qnetd layer ships the same file).
const QNETD_TLS_DROPIN: &str = include_str!(
    "../../layers/qnetd/files/etc/systemd/system/corosync-qnetd.service.d/nib-tls.conf"
);
const QNETD_TLS_DROPIN_PATH: &str = "/etc/systemd/system/corosync-qnetd.service.d/nib-tls.conf";

fn serial() -> Result<SerialNumber> {
    let mut b = nib_firstboot::seed::random_bytes(16)?;
    // positive, and not starting with a zero byte (DER INTEGER)
    b[0] = (b[0] & 0x7f) | 0x40;
    Ok(SerialNumber::from_slice(&b))
}

fn params(cn: &str, sans: Vec<String>) -> Result<CertificateParams> {
    let mut p = CertificateParams::new(sans).context("certificate names")?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    p.distinguished_name = dn;
    p.serial_number = Some(serial()?);
    // From 2000: a node whose clock is wrong at first boot (no RTC, a VM
    // restored from a snapshot) still trusts them; the window is not what
    // protects a private CA without revocation.
    let year = 1970
        + (SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs()
            / 31_556_952) as i32;
    p.not_before = rcgen::date_time_ymd(2000, 1, 1);
    p.not_after = rcgen::date_time_ymd(year + 100, 1, 1);
    Ok(p)
}

/// A CA and the two certificates it signs, for the pair `cluster` and its
/// arbiter (whose name and address go in no certificate: see below).
pub fn make_certs(cluster: &str, _arbiter: &Arbiter) -> Result<ArbiterSecrets> {
    let ca_key = KeyPair::generate().context("generating the qnetd CA key")?;
    let mut ca = params("QNet CA", Vec::new())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca.self_signed(&ca_key).context("signing the qnetd CA")?;
    let issuer = Issuer::new(ca, ca_key);

    let leaf = |cn: &str, sans: Vec<String>, eku: ExtendedKeyUsagePurpose| -> Result<_> {
        let key = KeyPair::generate().context("generating a key")?;
        let mut p = params(cn, sans)?;
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = vec![eku];
        p.use_authority_key_identifier_extension = true;
        let cert = p
            .signed_by(&key, &issuer)
            .with_context(|| format!("signing the certificate of {cn}"))?;
        Ok((cert.pem(), Secret::new(key.serialize_pem())))
    };
    // No subject alternative names: corosync-qdevice checks the server's
    // certificate against the name "Qnetd Server" (whatever host it
    // dialled), and NSS matches SANs instead of the CN when there are any
    // (a SAN with the arbiter's name and address failed the handshake:
    // "requested domain name does not match the server's certificate").
    let (qnetd_cert, qnetd_key) = leaf(
        "Qnetd Server",
        Vec::new(),
        ExtendedKeyUsagePurpose::ServerAuth,
    )?;
    let (cluster_cert, cluster_key) =
        leaf(cluster, Vec::new(), ExtendedKeyUsagePurpose::ClientAuth)?;
    Ok(ArbiterSecrets {
        ca_cert: ca_cert.pem(),
        qnetd_cert,
        qnetd_key,
        cluster_cert,
        cluster_key,
    })
}

/// `nib arbiter-setup CLUSTER.toml [--root DIR]`: corosync-qnetd on an
/// existing host, from the same file the pair's seeds come from. Only
/// what qnetd needs: its package (apt-get, on `/` when missing), its NSS
/// database, the TLS drop-in, and on `/` the service enabled and
/// restarted. The host's name, network and SSH keys are its own and left
/// alone (an arbiter image's first boot sets those).
pub fn run_setup(args: &ArbiterSetupArgs) -> Result<()> {
    let path = &args.cluster;
    let text = fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let shown = path.display().to_string();
    let spec = ClusterSpec::from_toml(&text, &shown).map_err(|e| invalid(e.to_string()))?;
    let (_pair, arbiter) = spec.validate_whole().map_err(|e| {
        invalid(format!(
            "{shown}: {}",
            e.to_string().trim_start_matches("cluster.toml: ")
        ))
    })?;
    let arbiter = arbiter.ok_or_else(|| {
        invalid(format!(
            "{shown}: no [arbiter] section (add one with `nib cluster init --arbiter NAME=ADDRESS`)"
        ))
    })?;
    let live = args.root == Path::new("/");
    if live && !Path::new("/usr/bin/corosync-qnetd").exists() {
        Cmd::new("apt-get")
            .args([
                "install",
                "-y",
                "--no-install-recommends",
                "corosync-qnetd",
                "libnss3-tools",
                "openssl",
            ])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .run()?;
    }
    let root = Root::open(&args.root)?;
    let db = NssDb::qnetd(
        &arbiter.tls.ca_cert,
        &arbiter.tls.qnetd_cert,
        &arbiter.tls.qnetd_key,
    );
    let changed = nssdb::ensure(&root, &db)?;
    let dropin = root.resolve(Path::new(QNETD_TLS_DROPIN_PATH))?;
    let dropin_changed = nib_host::write_atomic(&dropin, QNETD_TLS_DROPIN.as_bytes(), 0o644, None)?
        != nib_host::WriteOutcome::Unchanged;
    if live && Path::new("/run/systemd/system").exists() {
        if dropin_changed {
            Cmd::new("systemctl").arg("daemon-reload").run()?;
        }
        Cmd::new("systemctl")
            .args(["enable", "corosync-qnetd.service"])
            .run()?;
        // qnetd reads its database at start only
        let verb = if changed || dropin_changed {
            "restart"
        } else {
            "start"
        };
        Cmd::new("systemctl")
            .args([verb, "corosync-qnetd.service"])
            .run()?;
    }
    println!(
        "{} is the arbiter of {}: {} {}; corosync-qnetd needs TLS and the pair's client certificate (check with `corosync-qnetd-tool -l` once the pair runs)",
        arbiter.name,
        arbiter.cluster,
        nssdb::QNETD_DB,
        if changed { "written" } else { "unchanged" },
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_certificates_are_pem_the_parser_accepts() {
        let a = Arbiter {
            name: "arbiter01".into(),
            address: "198.18.0.13".into(),
        };
        let s = make_certs("openstack-ctl", &a).expect("certs");
        use nib_firstboot::role::pair::check_pem;
        for c in [&s.ca_cert, &s.qnetd_cert, &s.cluster_cert] {
            check_pem(c, "CERTIFICATE").expect("certificate PEM");
        }
        for k in [&s.qnetd_key, &s.cluster_key] {
            check_pem(k.expose(), "PRIVATE KEY").expect("key PEM");
        }
        let again = make_certs("openstack-ctl", &a).expect("certs");
        assert_ne!(s.ca_cert, again.ca_cert, "a fresh CA each time");
        assert_ne!(s.cluster_key, again.cluster_key);
    }
}
