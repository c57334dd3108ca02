//! `zpar kernel`: a standalone Rhai kernel for Jupyter (`-f FILE`, which a
//! kernelspec's argv runs) and `zpar kernel install`, which writes that
//! kernelspec where Jupyter looks for kernels.

use super::stop::STOP;
use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use signal_hook::consts::{SIGINT, SIGTERM};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, LazyLock};

/// Set by SIGINT in a standalone kernel: interrupt the running cell (the
/// kernel goes on; SIGTERM stops it).
static INTERRUPT: LazyLock<Arc<AtomicBool>> = LazyLock::new(Arc::default);

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub(super) struct KernelArgs {
    #[command(subcommand)]
    action: Option<KernelCmd>,
    /// Jupyter's connection file (`{connection_file}` in a kernelspec). If
    /// it does not exist, the kernel picks random ports on 127.0.0.1 and a
    /// fresh key, writes it (0600) and removes it on exit.
    #[arg(
        short = 'f',
        long = "file",
        value_name = "CONNECTION_FILE",
        required = true
    )]
    file: Option<PathBuf>,
    /// Limit of script operations per cell (default: none).
    #[arg(long)]
    max_operations: Option<u64>,
}

#[derive(Subcommand)]
enum KernelCmd {
    /// Write a kernelspec that runs `zpar kernel -f {connection_file}`, so
    /// `jupyter console --kernel zpar` and notebooks start Rhai kernels.
    Install(InstallArgs),
}

#[derive(Args)]
struct InstallArgs {
    /// Install for this user, in Jupyter's user data folder (the default).
    #[arg(long, conflicts_with = "prefix")]
    user: bool,
    /// Install under this prefix, in PREFIX/share/jupyter/kernels (a
    /// virtualenv's or conda env's prefix, or one on JUPYTER_PATH).
    #[arg(long, value_name = "PREFIX")]
    prefix: Option<PathBuf>,
    /// The kernelspec's name (`jupyter console --kernel NAME`).
    #[arg(long, default_value = "zpar")]
    name: String,
    /// The name notebooks show.
    #[arg(long, default_value = "Rhai (zpar)")]
    display_name: String,
}

pub(super) fn run_kernel(a: KernelArgs) -> Result<()> {
    match (a.action, a.file) {
        (Some(KernelCmd::Install(i)), _) => install(i),
        (None, Some(file)) => serve(file, a.max_operations),
        (None, None) => bail!("zpar kernel needs -f CONNECTION_FILE, or `install`"),
    }
}

fn serve(file: PathBuf, max_operations: Option<u64>) -> Result<()> {
    signal_hook::flag::register(SIGTERM, Arc::clone(&STOP))
        .context("cannot install the SIGTERM handler, so the kernel could not stop cleanly")?;
    signal_hook::flag::register(SIGINT, Arc::clone(&INTERRUPT))
        .context("cannot install the SIGINT handler, so Ctrl-C could not interrupt a cell")?;
    let mine = !file.exists();
    let mut config = zpar_engine::KernelConfig::new(&file);
    config.max_operations = max_operations;
    config.stop = Some(&**STOP);
    config.interrupt = Some(&**INTERRUPT);
    // Started by Jupyter: stop when it is gone rather than live on.
    #[cfg(unix)]
    if std::env::var_os("JPY_PARENT_PID").is_some() {
        config.parent_pid = Some(std::os::unix::process::parent_id());
    }
    if mine {
        // Started by hand: say where to connect (under Jupyter, its
        // console owns the terminal and the kernel keeps quiet).
        config.on_ready = Some(Box::new(|c, path| {
            println!(
                "zpar kernel listening on {} (shell port {}); connect with: jupyter console --existing {}",
                c.ip,
                c.shell_port,
                path.display()
            );
        }));
    }
    zpar_engine::EngineServer::kernel(config).run()?;
    Ok(())
}

/// Where Jupyter looks for a user's data: `$JUPYTER_DATA_DIR`, else the
/// platform's user data folder.
fn jupyter_user_data_dir() -> Result<PathBuf> {
    if let Some(d) = std::env::var_os("JUPYTER_DATA_DIR").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(d));
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .context("HOME is not set, so Jupyter's user data folder is unknown: use --prefix")?;
    if cfg!(target_os = "macos") {
        return Ok(home.join("Library/Jupyter"));
    }
    let data = std::env::var_os("XDG_DATA_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| home.join(".local/share"));
    Ok(data.join("jupyter"))
}

/// The kernelspec's `kernel.json`: how Jupyter starts a zpar kernel.
fn kernelspec(program: &Path, display_name: &str) -> serde_json::Value {
    serde_json::json!({
        "argv": [program.display().to_string(), "kernel", "-f", "{connection_file}"],
        "display_name": display_name,
        "language": "rhai",
        // Interrupts come as interrupt_request on control, not SIGINT.
        "interrupt_mode": "message",
        "metadata": {"debugger": false},
    })
}

fn install(a: InstallArgs) -> Result<()> {
    if a.name.is_empty()
        || !a
            .name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
    {
        bail!(
            "--name {:?}: a kernelspec name is letters, digits, '.', '_' and '-'",
            a.name
        );
    }
    let base = match &a.prefix {
        Some(p) => p.join("share/jupyter"),
        None => jupyter_user_data_dir()?,
    };
    let dir = base.join("kernels").join(&a.name);
    let program = std::env::current_exe()
        .and_then(std::fs::canonicalize)
        .context("cannot tell where this zpar binary is, so the kernelspec could not name it")?;
    let file = dir.join("kernel.json");
    zpar_protocol::connection::write_json_file(&file, &kernelspec(&program, &a.display_name))
        .with_context(|| format!("cannot install the kernelspec in {}", dir.display()))?;
    println!(
        "installed kernelspec {} in {}: start it with `jupyter console --kernel {}` or pick \"{}\" in a notebook",
        a.name,
        dir.display(),
        a.name,
        a.display_name
    );
    if a.prefix.is_some() {
        println!(
            "(Jupyter finds it if {} is its own prefix's share/jupyter or is on JUPYTER_PATH)",
            base.display()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kernelspec_runs_this_zpar_with_jupyters_file() {
        let spec = kernelspec(Path::new("/opt/zpar/bin/zpar"), "Rhai (zpar)");
        assert_eq!(
            spec["argv"],
            serde_json::json!(["/opt/zpar/bin/zpar", "kernel", "-f", "{connection_file}"])
        );
        assert_eq!(spec["language"], "rhai");
        assert_eq!(spec["interrupt_mode"], "message");
    }
}
