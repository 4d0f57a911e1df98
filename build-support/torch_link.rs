// Link settings for binaries that carry libtorch, shared by the build scripts of the
// crates that produce them (`include!`d, since build scripts cannot share a crate).
//
// torch-sys' rpath never reaches the final binary, and rustc's `--as-needed` drops
// `libtorch_cuda.so` (nothing references it by symbol), which leaves CUDA silently
// unavailable. With the `torch` feature on, this emits an rpath to libtorch's `lib/` and,
// when `libtorch_cuda.so` is there, links it with `--no-as-needed` — unless
// `LIBTORCH_CPU_ONLY=1`, for the CPU subset of the CUDA wheel that CI installs (its
// `libtorch_cuda.so` cannot load without the CUDA libraries).

fn link_torch() {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    println!("cargo:rerun-if-env-changed=LIBTORCH_CPU_ONLY");
    if std::env::var_os("CARGO_FEATURE_TORCH").is_none() {
        return;
    }
    let Some(lib) = std::env::var_os("DEP_TCH_LIBTORCH_LIB") else {
        println!("cargo:warning=torch-sys did not report libtorch's lib directory; set LD_LIBRARY_PATH at run time");
        return;
    };
    let lib = std::path::PathBuf::from(lib);
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
    let cpu_only = std::env::var("LIBTORCH_CPU_ONLY").is_ok_and(|v| v == "1");
    if !cpu_only && lib.join("libtorch_cuda.so").exists() {
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed,-ltorch_cuda,--as-needed");
    }
}
