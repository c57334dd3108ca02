//! zpar's integration tests: real hubs, engines and clients as processes on
//! 127.0.0.1 with random ports. One binary, one module per area.

mod bulk;
mod cli;
mod communicator;
mod console;
mod core;
mod curve;
mod dashboard;
mod faults;
mod flood;
mod hosts;
mod hub_loss;
mod ipyparallel;
mod jupyter_client;
mod kernel;
mod native;
mod nothing_lost;
mod private_files;
/// The Python venv helper, shared with zpar-protocol's interop tests.
#[path = "../../protocol/tests/integration/pyenv.rs"]
mod pyenv;
mod relay;
mod run;
mod scale;
mod sizes;
mod slurm;
mod support;
mod tasks;
