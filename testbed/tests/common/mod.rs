//! What the lab tests share: a throwaway lab with the demo configuration, and waiting for a path.
#![allow(dead_code)]

use std::time::Duration;

use anyhow::Result;
use testbed::demo;
use testbed::lab::spec::LabSpec;
use testbed::lab::{wait, Lab};

/// A lab in a temporary directory, torn down when dropped.
pub struct TestLab {
    pub lab: Option<Lab>,
    pub dir: tempfile::TempDir,
}

impl TestLab {
    pub fn new(compute: usize, snat: usize) -> Result<TestLab> {
        std::env::set_var("DVRMESH_LAB_BIN", env!("CARGO_BIN_EXE_dvrmesh-lab"));
        let dir = tempfile::Builder::new()
            .prefix("dvrmesh-lab-test")
            .tempdir()?;
        let lab = Lab::up(dir.path(), &LabSpec::sized(compute, snat), &mut |_| {})?;
        demo::configure(&lab)?;
        Ok(TestLab {
            lab: Some(lab),
            dir,
        })
    }

    pub fn lab(&mut self) -> &mut Lab {
        self.lab.as_mut().expect("lab present until drop")
    }
}

impl Drop for TestLab {
    fn drop(&mut self) {
        drop(self.lab.take());
        let _ = Lab::down(self.dir.path());
    }
}

/// Probes until one gets through (the datapath converges right after configuration).
pub fn reach(lab: &Lab, from: &str, to: &str) -> Result<testbed::probe::ProbeReport> {
    reach_within(lab, from, to, Duration::from_secs(15))
}

/// [`reach`] with its own budget.
pub fn reach_within(
    lab: &Lab,
    from: &str,
    to: &str,
    budget: Duration,
) -> Result<testbed::probe::ProbeReport> {
    let mut last = None;
    let ok = wait(budget, &format!("{from} reaching {to}"), || {
        match lab.probe(from, to, 1, 10) {
            Ok(r) if r.received > 0 => {
                last = Some(r);
                true
            }
            _ => false,
        }
    });
    ok.map(|_| last.expect("set on success"))
}
