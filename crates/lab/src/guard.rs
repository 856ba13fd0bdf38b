//! [`LabGuard`]: a lab that is torn down when dropped (tests: cleanup also
//! on panic).

use crate::config::LabConfig;
use crate::error::Result;
use crate::lab::Lab;

/// A lab that is torn down when dropped.
#[derive(Debug)]
pub struct LabGuard(Option<Lab>);

impl LabGuard {
    /// Bring a lab up under a guard.
    pub fn up(config: LabConfig) -> Result<LabGuard> {
        Lab::up(config).map(|lab| LabGuard(Some(lab)))
    }

    /// Guard an existing lab.
    pub fn new(lab: Lab) -> LabGuard {
        LabGuard(Some(lab))
    }

    /// Tear down now and report errors.
    pub fn down(mut self) -> Result<()> {
        match self.0.take() {
            Some(lab) => lab.down(),
            None => Ok(()),
        }
    }

    /// Stop guarding; the caller owns the lab again.
    pub fn into_inner(mut self) -> Option<Lab> {
        self.0.take()
    }
}

impl std::ops::Deref for LabGuard {
    type Target = Lab;
    fn deref(&self) -> &Lab {
        // Only `down`/`into_inner` take the lab, and they consume the guard.
        self.0.as_ref().unwrap_or_else(|| unreachable!())
    }
}

impl std::ops::DerefMut for LabGuard {
    fn deref_mut(&mut self) -> &mut Lab {
        self.0.as_mut().unwrap_or_else(|| unreachable!())
    }
}

impl Drop for LabGuard {
    fn drop(&mut self) {
        if let Some(lab) = self.0.take() {
            if let Err(e) = lab.down() {
                eprintln!("lab teardown: {e}");
            }
        }
    }
}
