//! `nib verify IMAGE.toml`: rebuild from an empty layer cache (the package
//! store is shared: its files are checked by digest) and compare every
//! digest with the last build's manifest.

use anyhow::{bail, Result};

use crate::build::{build, Options};
use crate::cli::VerifyArgs;
use crate::image::ImageDefinition;
use crate::manifest::Manifest;
use crate::progress::{Mode, Progress};

pub fn run(args: &VerifyArgs) -> Result<()> {
    let img = ImageDefinition::load(&args.image)?;
    let last = Manifest::read(&args.out.join(&img.name))?;
    if !nix::unistd::geteuid().is_root() {
        return Err(crate::error::invalid(
            "nib verify must run as root (it builds)",
        ));
    }
    crate::mounts::enter_private_namespace()?;
    let scratch = tempfile::Builder::new()
        .prefix("nib-verify-")
        .tempdir_in(std::env::temp_dir())?;
    let mode = if args.json || args.quiet {
        Mode::Quiet
    } else {
        Mode::Human
    };
    let mut p = Progress::new(mode);
    let opts = Options {
        out: scratch.path().join("out"),
        cache: scratch.path().join("cache"),
        debs: Some(args.cache.join("debs")),
        outputs: {
            let mut kinds: Vec<crate::cli::OutputKind> = Vec::new();
            for k in last
                .outputs
                .iter()
                .filter_map(|o| crate::outputs_kind(&o.path))
            {
                if !kinds.contains(&k) {
                    kinds.push(k);
                }
            }
            kinds
        },
        locked: false,
        write_lock: false,
    };
    let fresh = build(&img, &opts, &mut p)?;
    let mut rows = Vec::new();
    let mut bad = 0;
    let pairs = last
        .layers
        .iter()
        .map(|l| (format!("layer {}", l.name), l.digest.clone()));
    let fresh_layers: std::collections::BTreeMap<String, String> = fresh
        .layers
        .iter()
        .map(|l| (format!("layer {}", l.name), l.digest.clone()))
        .chain(fresh.outputs.iter().map(|o| {
            (
                format!("output {}", o.path.display()),
                format!("sha256:{}", o.sha256),
            )
        }))
        .collect();
    for (what, want) in pairs.chain(last.outputs.iter().map(|o| {
        (
            format!("output {}", o.path.display()),
            format!("sha256:{}", o.sha256),
        )
    })) {
        let got = fresh_layers
            .get(&what)
            .cloned()
            .unwrap_or_else(|| "(missing)".into());
        let same = got == want;
        if !same {
            bad += 1;
        }
        rows.push((what, want, got, same));
    }
    let packages_same = fresh.packages == last.packages;
    if args.json {
        let v = serde_json::json!({
            "image": img.name,
            "identical": bad == 0 && packages_same,
            "packages_identical": packages_same,
            "items": rows.iter().map(|(w, a, b, s)| serde_json::json!({"item": w, "last": a, "rebuilt": b, "identical": s})).collect::<Vec<_>>(),
        });
        println!("{v}");
    } else if !args.quiet || bad > 0 {
        for (w, a, b, s) in &rows {
            if *s {
                println!("identical  {w:<28} {a}");
            } else {
                println!(
                    "DIFFERENT  {w:<28} last {a}\n           {:<28} now  {b}",
                    ""
                );
            }
        }
        println!(
            "{}: {} of {} digests identical after a rebuild from an empty cache{}",
            img.name,
            rows.len() - bad,
            rows.len(),
            if packages_same {
                ""
            } else {
                "; the package list differs (the mirror moved?)"
            }
        );
    }
    if bad > 0 || !packages_same {
        bail!(
            "{}: the rebuild is not bit-identical to the last build",
            img.name
        );
    }
    Ok(())
}
