//! Under `edgehost dev`: the compiler's errors of route crates whose last
//! build failed, by component. Such a route answers 500 with them (in dev
//! mode only), so a curl shows why a change is not live, while the last good
//! component stays loaded.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

/// Build errors by component file stem (the crate's name with underscores).
#[derive(Default)]
pub(crate) struct BuildErrors {
    errors: Mutex<HashMap<String, Arc<str>>>,
}

impl BuildErrors {
    /// The build error for the route served from `component`, if its crate
    /// failed its last build.
    pub(crate) fn for_component(&self, component: &Path) -> Option<Arc<str>> {
        let stem = component.file_stem()?.to_str()?;
        let errors = self.errors.lock().unwrap_or_else(|p| p.into_inner());
        errors.get(stem).cloned()
    }

    /// Records that the crate building `stem` failed with `text`.
    pub(crate) fn failed(&self, stem: String, text: String) {
        let mut errors = self.errors.lock().unwrap_or_else(|p| p.into_inner());
        errors.insert(stem, Arc::from(text));
    }

    /// Records that the crate building `stem` built.
    pub(crate) fn built(&self, stem: &str) {
        let mut errors = self.errors.lock().unwrap_or_else(|p| p.into_inner());
        errors.remove(stem);
    }
}
