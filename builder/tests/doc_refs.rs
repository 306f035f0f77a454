//! Every pointer to the design documents resolves. Comments, templates,
//! scripts and docs cite builder/doc/DESIGN.md, firstboot/doc/HA.md and
//! tests/peers/PEERS.md as `<repo path>, "<section>"` (or `"A" and "B"`);
//! each named file must exist and hold a heading with that exact text.
//! Markdown links to .md files must resolve from the linking file, with
//! their `#anchor` matching a heading. The three documents are never named
//! without their path, and nothing points outside the repository (the
//! notes they were written from lived outside it).

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use common::workspace_root;

/// The documents that must be named by their repo-relative path.
const DOCS: [&str; 3] = [
    "builder/doc/DESIGN.md",
    "firstboot/doc/HA.md",
    "tests/peers/PEERS.md",
];
/// What may no longer appear: the old names of those notes and where they
/// lived (split so that this file does not match itself).
const GONE: [&str; 3] = [
    concat!("HA-", "NOTES"),
    concat!("../", "shared"),
    concat!("/work/", "shared"),
];
/// Directories with no sources in them.
const SKIP: [&str; 5] = ["target", ".git", "out", ".cache", "node_modules"];

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = fs::read_dir(dir) else { return };
    let mut entries: Vec<_> = rd.filter_map(Result::ok).collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let p = e.path();
        let name = e.file_name().to_string_lossy().into_owned();
        match e.file_type() {
            Ok(t) if t.is_dir() && !SKIP.contains(&name.as_str()) => files(&p, out),
            Ok(t) if t.is_file() => out.push(p),
            _ => {}
        }
    }
}

/// `#` headings of a markdown file, without the `#`s.
fn headings(path: &Path) -> Vec<String> {
    let text = fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let t = l.trim_start_matches('#');
            (t.len() < l.len() && t.starts_with(' ')).then(|| t.trim().to_string())
        })
        .collect()
}

/// GitHub's anchor for a heading.
fn slug(heading: &str) -> String {
    heading
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

fn is_path_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "_./-".contains(c)
}

/// The quoted section names after a reference: `, "A"` or ` "A" and "B"`.
/// Err when a quote is opened but not closed on the same line.
fn sections(rest: &str) -> Result<Vec<String>, String> {
    let line = rest.lines().next().unwrap_or("");
    let mut s = line.strip_prefix(',').unwrap_or(line);
    let mut names = Vec::new();
    while let Some(after) = s.strip_prefix(" \"") {
        let Some(end) = after.find('"') else {
            return Err("its section name does not end on the same line".into());
        };
        names.push(after[..end].to_string());
        s = &after[end + 1..];
        match s.strip_prefix(" and") {
            Some(more) => s = more,
            None => break,
        }
    }
    Ok(names)
}

#[test]
fn every_doc_reference_names_a_file_and_section_that_exist() {
    let root = workspace_root();
    let mut all = Vec::new();
    files(&root, &mut all);
    let this = Path::new(file!()).file_name().expect("file name");
    let mut problems = Vec::new();
    let mut refs = 0;
    let mut found = Vec::new();
    for path in &all {
        if path.file_name() == Some(this) {
            continue;
        }
        let Ok(text) = fs::read_to_string(path) else {
            continue; // not text
        };
        let shown = path
            .strip_prefix(&root)
            .unwrap_or(path)
            .display()
            .to_string();
        let line_of = |i: usize| text[..i].matches('\n').count() + 1;
        for g in GONE {
            for (i, _) in text.match_indices(g) {
                problems.push(format!("{shown}:{}: mentions {g}", line_of(i)));
            }
        }
        for (i, _) in text.match_indices(".md") {
            let after = &text[i + 3..];
            if after.starts_with(|c: char| c.is_ascii_alphanumeric()) {
                continue; // .mdx, .md5…
            }
            let start = text[..i]
                .char_indices()
                .rev()
                .take_while(|(_, c)| is_path_char(*c))
                .last()
                .map_or(i, |(j, _)| j);
            let token = &text[start..i + 3];
            let anchor_len = after
                .strip_prefix('#')
                .map(|a| {
                    1 + a
                        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_'))
                        .unwrap_or(a.len())
                })
                .unwrap_or(0);
            let anchor = after[..anchor_len].trim_start_matches('#');
            let rest = &after[anchor_len..];
            let at = format!("{shown}:{}", line_of(i));
            let is_link_target = text[..start].ends_with("](");
            let target = if is_link_target {
                path.parent().expect("parent").join(token)
            } else if token.contains('/') {
                root.join(token)
            } else if DOCS.iter().any(|d| d.ends_with(&format!("/{token}"))) {
                problems.push(format!("{at}: names {token} without its path"));
                continue;
            } else {
                continue; // a bare README.md and the like
            };
            if !target.is_file() {
                problems.push(format!("{at}: {token} does not exist"));
                continue;
            }
            let heads = headings(&target);
            if !anchor.is_empty() && !heads.iter().any(|h| slug(h) == anchor) {
                problems.push(format!("{at}: {token} has no heading for #{anchor}"));
            }
            if is_link_target {
                continue;
            }
            match sections(rest) {
                Ok(names) => {
                    for n in names {
                        refs += 1;
                        if heads.contains(&n) {
                            found.push(format!("{at}: {token}, \"{n}\""));
                        } else {
                            problems.push(format!("{at}: {token} has no section \"{n}\""));
                        }
                    }
                }
                Err(m) => problems.push(format!("{at}: {token}: {m}")),
            }
        }
    }
    assert!(
        problems.is_empty(),
        "{} problem(s) in the references to the docs:\n{}",
        problems.len(),
        problems.join("\n")
    );
    assert!(
        refs >= 30,
        "only {refs} section references found: is the scan looking at the sources?"
    );
    eprintln!(
        "{refs} section references, every file and section found:\n{}",
        found.join("\n")
    );
}
