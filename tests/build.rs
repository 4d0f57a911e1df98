//! Build script: libtorch link settings for the tests that trace TorchScript modules
//! themselves (the `torch` feature).

include!("../build-support/torch_link.rs");

fn main() {
    link_torch();
}
