//! What one apply (or teardown) did: the writes it made and the errors of
//! the steps that failed. Independent steps all run; the errors are
//! reported together at the end.

use tracing::{debug, warn};

use crate::error::{collect, DatapathError, Result};
use crate::ApplyReport;

#[derive(Debug, Default)]
pub(crate) struct Tally {
    pub changes: usize,
    errors: Vec<DatapathError>,
}

impl Tally {
    /// Counts a step's writes or keeps its error; returns the writes (0 on error).
    pub(crate) fn add(&mut self, step: Result<usize>) -> usize {
        match step {
            Ok(k) => {
                self.changes += k;
                k
            }
            Err(e) => {
                self.errors.push(e);
                0
            }
        }
    }

    /// Keeps the error of a step that writes nothing worth counting.
    pub(crate) fn check(&mut self, step: Result<()>) {
        if let Err(e) = step {
            self.errors.push(e);
        }
    }

    /// Keeps each refused endpoint record as an error of this apply (the
    /// rest of the apply still ran), logging it.
    pub(crate) fn refuse(&mut self, rejected: Vec<DatapathError>) {
        for e in rejected {
            warn!(error = %e, "Endpoint record refused.");
            self.errors.push(e);
        }
    }

    /// The local endpoints that could not be converged in this apply.
    pub(crate) fn failed_endpoints(&self) -> std::collections::HashSet<String> {
        self.errors
            .iter()
            .filter_map(|e| match e {
                DatapathError::EndpointFailed { id, .. } => Some(id.clone()),
                _ => None,
            })
            .collect()
    }

    pub(crate) fn failed(&self) -> bool {
        !self.errors.is_empty()
    }

    /// The writes, or every error.
    pub(crate) fn finish(self) -> Result<usize> {
        collect(self.errors).map(|()| self.changes)
    }

    /// [`finish`](Self::finish) as the report of an apply of `datapath`.
    pub(crate) fn report(self, datapath: &'static str) -> Result<ApplyReport> {
        if self.changes > 0 {
            debug!(datapath, changes = self.changes, "Datapath converged.");
        }
        self.finish().map(|changes| ApplyReport { changes })
    }
}
