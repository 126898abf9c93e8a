//! The grant policies the server decides tasks with: `*.cedar` files read from `policy_dir`,
//! loaded into a `lanyard_policy::PolicyBundle` and swapped in whole. A set that does not load is
//! refused and the set that was deciding keeps deciding; no directory, or no policy in it, means
//! every grant is refused. The identity providers' keys are read with them (see [`crate::identity`]).

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use lanyard_policy::{MAX_POLICY_FILE_BYTES, PolicyBundle};

use crate::config::IdentityProviderConfig;
use crate::identity::IdentityProviders;

/// Most `*.cedar` files read from the policy directory.
const MAX_POLICY_FILES: usize = 10_000;

/// Why a policy set was not loaded.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PolicyError {
    #[error("cannot read the policy directory {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("policy file {path} is larger than {MAX_POLICY_FILE_BYTES} bytes")]
    TooLarge { path: PathBuf },
    #[error("the policy directory {path} holds more than {MAX_POLICY_FILES} .cedar files")]
    TooManyFiles { path: PathBuf },
    #[error("{0}")]
    Invalid(#[from] lanyard_policy::PolicyLoadError),
    #[error("{0}")]
    IdentityProvider(String),
}

/// A loaded set and where it came from.
#[derive(Clone)]
pub(crate) struct LoadedPolicies {
    pub(crate) bundle: Arc<PolicyBundle>,
    /// The file names loaded, sorted.
    pub(crate) files: Vec<String>,
    /// The identity providers trusted to name whom a task acts for.
    pub(crate) identity: Arc<IdentityProviders>,
}

/// The set deciding now, and how to load the next.
pub(crate) struct Policies {
    dir: Option<PathBuf>,
    identity_providers: Vec<IdentityProviderConfig>,
    current: RwLock<LoadedPolicies>,
}

impl std::fmt::Debug for Policies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Policies")
            .field("dir", &self.dir)
            .field("files", &self.current().files)
            .finish_non_exhaustive()
    }
}

impl Policies {
    /// Loads the set in `dir` (none: every grant refused). A set that does not load is an error
    /// here: a server does not start deciding with policies it could not read.
    pub(crate) fn load(
        dir: Option<PathBuf>,
        identity_providers: Vec<IdentityProviderConfig>,
    ) -> Result<Self, PolicyError> {
        let loaded = read(dir.as_deref(), &identity_providers)?;
        if loaded.bundle.is_empty() {
            tracing::warn!(dir = ?dir, "no grant policy loaded: every task grant is refused");
        } else {
            tracing::info!(
                policies = loaded.bundle.len(),
                files = loaded.files.len(),
                identity_providers = loaded.identity.len(),
                "grant policies loaded"
            );
        }
        Ok(Self {
            dir,
            identity_providers,
            current: RwLock::new(loaded),
        })
    }

    /// The set deciding now.
    pub(crate) fn current(&self) -> LoadedPolicies {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Reads the directory again and swaps the new set in if it loads; otherwise the current set
    /// stays and the error says why.
    pub(crate) fn reload(&self) -> Result<LoadedPolicies, PolicyError> {
        let loaded = read(self.dir.as_deref(), &self.identity_providers)?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = loaded.clone();
        Ok(loaded)
    }
}

/// Reads the policies in `dir` (none: the empty set) and the identity providers' keys.
fn read(
    dir: Option<&Path>,
    identity_providers: &[IdentityProviderConfig],
) -> Result<LoadedPolicies, PolicyError> {
    let (bundle, files) = match dir {
        Some(dir) => read_dir(dir)?,
        None => (PolicyBundle::empty(), Vec::new()),
    };
    let identity =
        IdentityProviders::load(identity_providers).map_err(PolicyError::IdentityProvider)?;
    Ok(LoadedPolicies {
        bundle: Arc::new(bundle),
        files,
        identity: Arc::new(identity),
    })
}

/// Reads every `*.cedar` file directly in `dir`, in name order, and loads them as one set.
fn read_dir(dir: &Path) -> Result<(PolicyBundle, Vec<String>), PolicyError> {
    let read_error = |path: &Path, source| PolicyError::Read {
        path: path.to_owned(),
        source,
    };
    let mut paths = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| read_error(dir, e))? {
        let entry = entry.map_err(|e| read_error(dir, e))?;
        let path = entry.path();
        let is_file = entry.file_type().map(|t| t.is_file()).unwrap_or(false);
        if is_file && path.extension().is_some_and(|ext| ext == "cedar") {
            paths.push(path);
            if paths.len() > MAX_POLICY_FILES {
                return Err(PolicyError::TooManyFiles {
                    path: dir.to_owned(),
                });
            }
        }
    }
    paths.sort();
    let mut files = Vec::with_capacity(paths.len());
    for path in &paths {
        let len = std::fs::metadata(path)
            .map_err(|e| read_error(path, e))?
            .len();
        if len > MAX_POLICY_FILE_BYTES as u64 {
            return Err(PolicyError::TooLarge { path: path.clone() });
        }
        let text = std::fs::read_to_string(path).map_err(|e| read_error(path, e))?;
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        files.push((name, text));
    }
    let bundle = PolicyBundle::load(&files)?;
    Ok((bundle, files.into_iter().map(|(name, _)| name).collect()))
}
