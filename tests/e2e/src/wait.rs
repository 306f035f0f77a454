//! Bounded waits: every check polls until its condition holds or its time
//! is up, and then says what it waited for and the last thing it saw.

use std::thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};

/// Poll `f` every `every` until it returns `Ok`, at most `timeout`. On
/// timeout the error names `what` and carries `f`'s last error.
pub fn until<T>(
    what: &str,
    timeout: Duration,
    every: Duration,
    mut f: impl FnMut() -> Result<T>,
) -> Result<T> {
    let start = Instant::now();
    loop {
        match f() {
            Ok(v) => return Ok(v),
            Err(e) => {
                if start.elapsed() >= timeout {
                    return Err(anyhow!(
                        "timed out after {:.1} s waiting for {what}; last seen: {e:#}",
                        timeout.as_secs_f64()
                    ));
                }
            }
        }
        thread::sleep(every);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::bail;

    #[test]
    fn returns_first_success() -> Result<()> {
        let mut n = 0;
        let v = until(
            "n to reach 3",
            Duration::from_secs(5),
            Duration::from_millis(1),
            || {
                n += 1;
                if n < 3 {
                    bail!("n is {n}")
                }
                Ok(n)
            },
        )?;
        assert_eq!(v, 3);
        Ok(())
    }

    #[test]
    fn timeout_names_condition_and_last_error() {
        let err = until::<()>(
            "the moon",
            Duration::from_millis(50),
            Duration::from_millis(5),
            || bail!("still cheese"),
        )
        .err()
        .map(|e| format!("{e:#}"))
        .unwrap_or_default();
        assert!(err.contains("the moon"), "{err}");
        assert!(err.contains("still cheese"), "{err}");
    }
}
