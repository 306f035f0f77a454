//! `nib plan`: the image's layers, packages and cache keys. No network, no
//! root: versions come from the cache's last index when there is one.

use anyhow::Result;

use crate::build::plan::{definition_digest, layers, Sources};
use crate::cli::PlanArgs;
use crate::image::ImageDefinition;
use crate::index::{self, PackageIndex};

fn default_cache() -> std::path::PathBuf {
    std::env::var_os("NIB_CACHE")
        .map(Into::into)
        .unwrap_or_else(|| ".cache/nib".into())
}

pub fn run(args: &PlanArgs) -> Result<()> {
    let img = ImageDefinition::load(&args.image)?;
    let cache = default_cache();
    let files = index::cached(&cache.join("index"), &img);
    let idx = match &files {
        Some(f) => Some(PackageIndex::load(f, &img.architecture)?),
        None => None,
    };
    let sources = Sources::read(&img)?;
    let plans = layers(&img, &sources, idx.as_ref(), false)?;
    let missing_installs: Vec<String> = img
        .layers
        .iter()
        .flat_map(|l| {
            l.install
                .iter()
                .filter(|i| !i.src_path.is_file())
                .map(move |i| format!("{} ({})", i.src, l.name))
        })
        .collect();
    let unknown: Vec<(String, String)> = match &idx {
        Some(i) => index::missing(
            i,
            img.layers.iter().flat_map(|l| {
                l.packages
                    .iter()
                    .map(move |p| (l.name.as_str(), p.as_str()))
            }),
        ),
        None => Vec::new(),
    };
    if args.json {
        let v = serde_json::json!({
            "image": img.name,
            "suite": img.suite,
            "distro": img.distro,
            "mirror": img.mirror,
            "keyring": img.keyring,
            "components": img.components,
            "architecture": img.architecture,
            "epoch": img.epoch,
            "definition_digest": definition_digest(&img, &sources),
            "versions_resolved": idx.is_some(),
            "layers": plans.iter().map(|p| serde_json::json!({
                "name": p.name,
                "key": p.key,
                "packages": p.packages,
                "closure": p.closure.len(),
                "description": p.layer.map(|i| img.layers[i].description.clone()),
                "units": p.layer.map(|i| img.layers[i].units.clone()),
                "install": p.layer.map(|i| img.layers[i].install.clone()),
            })).collect::<Vec<_>>(),
            "missing_install_sources": missing_installs,
            "packages_not_in_index": unknown.iter().map(|(l, p)| serde_json::json!({"layer": l, "package": p})).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!(
        "image {} — {} {} ({}) [{}] epoch {}",
        img.name,
        img.suite,
        img.mirror,
        img.components.join(","),
        img.architecture,
        img.epoch
    );
    println!("definition {}", definition_digest(&img, &sources));
    match &files {
        Some(_) => println!("versions: from the cached index (keys as the next build computes them unless the mirror moved)"),
        None => println!("versions: unresolved (no cached index; keys cover the definition only, the build adds package versions)"),
    }
    for p in &plans {
        println!();
        let desc = p
            .layer
            .map(|i| img.layers[i].description.as_str())
            .unwrap_or("initramfs once, final clean-up");
        println!("layer {:<10} key {}", p.name, &p.key[..16]);
        println!("  {desc}");
        if !p.packages.is_empty() {
            println!("  packages: {}", p.packages.join(" "));
        }
        if idx.is_some() {
            println!("  closure: {} packages", p.closure.len());
        }
        if let Some(i) = p.layer {
            let l = &img.layers[i];
            if !l.units.is_empty() {
                println!(
                    "  units: enable [{}] disable [{}] mask [{}]",
                    l.units.enable.join(" "),
                    l.units.disable.join(" "),
                    l.units.mask.join(" ")
                );
            }
            for inst in &l.install {
                println!(
                    "  install: {} -> {} ({:04o})",
                    inst.src, inst.dest, inst.mode
                );
            }
        }
    }
    for m in &missing_installs {
        println!("\nnote: install source {m} does not exist yet (make image builds it)");
    }
    for (l, p) in &unknown {
        println!(
            "\nwarning: the cached index has no package {p} (layer {l}); the build will refuse it"
        );
    }
    Ok(())
}
