//! `nib inspect OUT_DIR`: a build's manifest, readable.

use anyhow::Result;

use crate::cli::InspectArgs;
use crate::manifest::Manifest;

pub fn run(args: &InspectArgs) -> Result<()> {
    let m = Manifest::read(&args.out_dir)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&m)?);
        return Ok(());
    }
    print!("{}", render(&m));
    Ok(())
}

pub fn render(m: &Manifest) -> String {
    let mut s = String::new();
    s.push_str(&format!(
        "image {} — {} {} [{}], epoch {}, built by {} {}\n",
        m.image, m.suite, m.mirror, m.architecture, m.epoch, m.builder.name, m.builder.version
    ));
    s.push_str(&format!("definition {}\n\nlayers:\n", m.definition_digest));
    for l in &m.layers {
        s.push_str(&format!(
            "  {:<10} {}  {:>8.1} MB\n",
            l.name,
            l.digest,
            l.size as f64 / 1e6
        ));
    }
    s.push_str("\noutputs:\n");
    for o in &m.outputs {
        s.push_str(&format!(
            "  {:<24} sha256:{}  {:>8.1} MB\n",
            o.path.display(),
            o.sha256,
            o.size as f64 / 1e6
        ));
    }
    s.push_str(&format!("\npackages ({}):\n", m.packages.len()));
    for p in &m.packages {
        s.push_str(&format!("  {:<40} {:<32} {}\n", p.name, p.version, p.arch));
    }
    s
}
