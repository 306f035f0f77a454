fn main() {
    eprintln!("nib-firstboot: not implemented yet");
    std::process::exit(1);
}
