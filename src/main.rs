fn main() -> std::process::ExitCode {
    // Output piped into `head` or a closed terminal ends the program the
    // way it ends `cat`, not with a panic inside println!.
    #[cfg(unix)]
    // SAFETY: restoring a signal's default disposition before any thread
    // starts touches no Rust state.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    icephone::app::run()
}
