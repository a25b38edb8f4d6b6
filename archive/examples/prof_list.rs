use recipe_archive::query::{filter_runs, Condition};
use recipe_archive::Archive;
fn main() {
    let root = std::env::args().nth(1).unwrap();
    let n: usize = std::env::args().nth(2).unwrap().parse().unwrap();
    let filter = std::env::args().nth(3).is_some();
    let conditions = [
        Condition::parse("config.lr=0.01").unwrap(),
        Condition::parse("summary.loss<0.5").unwrap(),
    ];
    let mut times = vec![];
    for _ in 0..n {
        let t = std::time::Instant::now();
        let runs = Archive::open_existing(&root).unwrap().runs().unwrap().value;
        let k = if filter {
            filter_runs(runs, &conditions).len()
        } else {
            runs.len()
        };
        std::hint::black_box(k);
        times.push(t.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    println!("median {:.4} ms", times[n / 2] * 1e3);
}
