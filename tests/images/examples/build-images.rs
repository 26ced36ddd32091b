//! Builds (or finds) the test images and prints their tags: `cargo run -p flowcase-test-images
//! --example build-images`. Handy to time a cold build or to prepare a machine.

fn main() {
    for (name, build) in [
        (
            "httpd",
            flowcase_test_images::httpd_image as fn() -> Result<String, String>,
        ),
        ("vnc", flowcase_test_images::vnc_image),
    ] {
        let started = std::time::Instant::now();
        match build() {
            Ok(tag) => println!("{name}: {tag} ({:.1} s)", started.elapsed().as_secs_f64()),
            Err(e) => {
                eprintln!("{name}: {e}");
                std::process::exit(1);
            }
        }
    }
}
