//! zpar's integration tests: real hubs, engines and clients as processes on
//! 127.0.0.1 with random ports. One binary, one module per area.

mod cli;
mod communicator;
mod console;
mod core;
mod faults;
mod hosts;
mod hub_loss;
mod jupyter_client;
mod run;
mod support;
mod tasks;
