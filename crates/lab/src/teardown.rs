//! Removing a lab: its namespaces with everything running in them (the
//! agents, OVS daemons and stray workload processes), and what it keeps in
//! its state dir; also without a saved state, after a crash.

use std::path::Path;

use socketplane_testkit::netns;

use crate::error::{LabError, Result};
use crate::state;
use crate::topology::Names;

/// Delete `namespaces` (killing what runs in them), in the given order;
/// goes on after errors and collects them.
pub(crate) fn delete_namespaces(namespaces: &[String], errors: &mut Vec<LabError>) {
    for ns in namespaces {
        if let Err(e) = netns::delete(ns) {
            errors.push(e.into());
        }
        if let Err(e) = crate::workload::remove_etc_dir(ns) {
            errors.push(e);
        }
    }
}

/// Errors collected while tearing down, as one result.
pub(crate) fn finish(errors: Vec<LabError>) -> Result<()> {
    if errors.is_empty() {
        Ok(())
    } else {
        Err(LabError::Teardown(errors))
    }
}

/// Remove whatever is left of a lab named `name` without its state: every
/// namespace `sp-NAME-*` with what runs in it, and the state dir.
pub(crate) fn purge(name: &str, state_dir: &Path) -> Result<()> {
    let prefix = Names(name).prefix();
    let mut errors = Vec::new();
    let namespaces: Vec<String> = netns::list()?
        .into_iter()
        .filter(|n| n.starts_with(&prefix))
        .collect();
    delete_namespaces(&namespaces, &mut errors);
    state::remove(state_dir, &mut errors);
    finish(errors)
}
