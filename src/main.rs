fn main() -> std::process::ExitCode {
    icephone::app::run()
}
