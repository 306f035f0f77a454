//! Progress lines (one per step, with elapsed time), `--quiet`, `--json`,
//! and the `--timings` table.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::Instant;

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Quiet,
    Human,
    Json,
}

#[derive(Debug, Clone, Serialize)]
pub struct Timing {
    pub layer: String,
    pub step: String,
    pub seconds: f64,
}

pub struct Progress {
    pub mode: Mode,
    start: Instant,
    pub timings: Vec<Timing>,
}

impl Progress {
    pub fn new(mode: Mode) -> Self {
        Progress {
            mode,
            start: Instant::now(),
            timings: Vec::new(),
        }
    }

    pub fn elapsed(&self) -> f64 {
        self.start.elapsed().as_secs_f64()
    }

    /// One line: `[  12.3s] layer  message`.
    pub fn line(&self, layer: &str, msg: &str) {
        match self.mode {
            Mode::Quiet => {}
            Mode::Human => {
                let _ = writeln!(
                    std::io::stderr(),
                    "[{:7.1}s] {:<10} {}",
                    self.elapsed(),
                    layer,
                    msg
                );
            }
            Mode::Json => {
                let v = serde_json::json!({
                    "event": "progress",
                    "elapsed": (self.elapsed() * 1000.0).round() / 1000.0,
                    "layer": layer,
                    "message": msg,
                });
                println!("{v}");
            }
        }
    }

    /// Time `f` as `step` of `layer`; print a line when it is done.
    pub fn step<T>(
        &mut self,
        layer: &str,
        step: &str,
        f: impl FnOnce() -> anyhow::Result<T>,
    ) -> anyhow::Result<T> {
        if self.mode == Mode::Human && std::io::IsTerminal::is_terminal(&std::io::stderr()) {
            let _ = write!(
                std::io::stderr(),
                "[{:7.1}s] {:<10} {} …\r",
                self.elapsed(),
                layer,
                step
            );
        }
        let t = Instant::now();
        let r = f();
        let secs = t.elapsed().as_secs_f64();
        self.timings.push(Timing {
            layer: layer.to_string(),
            step: step.to_string(),
            seconds: secs,
        });
        match &r {
            Ok(_) => self.line(layer, &format!("{step} ({secs:.1}s)")),
            Err(_) => self.line(layer, &format!("{step} failed after {secs:.1}s")),
        }
        r
    }

    /// Where the time went: layers as rows, steps as columns.
    pub fn table(&self) -> String {
        let mut steps: Vec<String> = Vec::new();
        let mut layers: Vec<String> = Vec::new();
        let mut cell: BTreeMap<(String, String), f64> = BTreeMap::new();
        for t in &self.timings {
            if !steps.contains(&t.step) {
                steps.push(t.step.clone());
            }
            if !layers.contains(&t.layer) {
                layers.push(t.layer.clone());
            }
            *cell.entry((t.layer.clone(), t.step.clone())).or_default() += t.seconds;
        }
        let w = steps.iter().map(|s| s.len().max(7)).collect::<Vec<_>>();
        let mut out = format!("{:<10}", "layer");
        for (s, w) in steps.iter().zip(&w) {
            out.push_str(&format!(" {s:>w$}"));
        }
        out.push_str(&format!(" {:>7}\n", "total"));
        let mut col_tot = vec![0.0; steps.len()];
        for l in &layers {
            out.push_str(&format!("{l:<10}"));
            let mut tot = 0.0;
            for (i, (s, w)) in steps.iter().zip(&w).enumerate() {
                match cell.get(&(l.clone(), s.clone())) {
                    Some(v) => {
                        tot += v;
                        col_tot[i] += v;
                        out.push_str(&format!(" {v:>w$.1}"));
                    }
                    None => out.push_str(&format!(" {:>w$}", "-")),
                }
            }
            out.push_str(&format!(" {tot:>7.1}\n"));
        }
        out.push_str(&format!("{:<10}", "total"));
        for (v, w) in col_tot.iter().zip(&w) {
            out.push_str(&format!(" {v:>w$.1}"));
        }
        out.push_str(&format!(" {:>7.1}\n", self.elapsed()));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_sums_rows_and_columns() {
        let mut p = Progress::new(Mode::Quiet);
        p.timings = vec![
            Timing {
                layer: "base".into(),
                step: "install".into(),
                seconds: 2.0,
            },
            Timing {
                layer: "base".into(),
                step: "seal".into(),
                seconds: 1.0,
            },
            Timing {
                layer: "db".into(),
                step: "install".into(),
                seconds: 4.0,
            },
        ];
        let t = p.table();
        assert!(t.contains("base") && t.contains("3.0"), "{t}");
        assert!(t.lines().last().expect("total").contains("6.0"), "{t}");
    }
}
