//! Arguments more than one command takes: which profile, and whether the
//! hub encrypts.

use clap::Args;
use std::path::PathBuf;
use zpar_protocol::Profile;

/// Which profile: a folder, a name, or the default.
#[derive(Args, Clone, Debug)]
pub(super) struct ProfileArgs {
    /// Profile name (folder `$ZPAR_DIR/profile_NAME`, default `default`).
    #[arg(long)]
    profile: Option<String>,
    /// Profile folder, given outright.
    #[arg(long)]
    profile_dir: Option<PathBuf>,
}

impl ProfileArgs {
    /// The profile these arguments name.
    pub(super) fn resolve(&self) -> Profile {
        Profile::resolve(self.profile.as_deref(), self.profile_dir.as_deref())
    }
}

/// Whether the hub encrypts (both `zpar hub` and `zpar cluster start`).
#[derive(Args, Clone, Debug, Default)]
pub(super) struct CurveArgs {
    /// Encrypt every connection with CURVE (the default when --ip is not
    /// loopback); the connection files carry the hub's keys.
    #[arg(long, conflicts_with = "no_curve")]
    curve: bool,
    /// Do not encrypt, even when --ip is not loopback (then with a
    /// warning: traffic crosses the network in clear text).
    #[arg(long)]
    no_curve: bool,
}

impl CurveArgs {
    /// The hub's CURVE mode these arguments ask for.
    pub(super) fn mode(&self) -> zpar_hub::CurveMode {
        match (self.curve, self.no_curve) {
            (true, _) => zpar_hub::CurveMode::On,
            (_, true) => zpar_hub::CurveMode::Off,
            _ => zpar_hub::CurveMode::Auto,
        }
    }

    /// The same choice as `zpar hub` arguments.
    pub(super) fn hub_args(&self) -> Vec<String> {
        match self.mode() {
            zpar_hub::CurveMode::On => vec!["--curve".into()],
            zpar_hub::CurveMode::Off => vec!["--no-curve".into()],
            zpar_hub::CurveMode::Auto => Vec::new(),
        }
    }
}
