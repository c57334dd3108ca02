//! The `zpar` binary: everything is in [`zpar::cli`].

fn main() {
    zpar::cli::main();
}
