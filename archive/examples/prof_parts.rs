use recipe_archive::files::read_parquet;
use recipe_archive::records::runs_from_batch;
use recipe_archive::schema::Table;
use std::time::Instant;
fn med(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2] * 1e3
}
fn main() {
    let dir = std::env::args().nth(1).unwrap();
    let mut paths: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    paths.sort();
    for p in &paths {
        let (mut r, mut d) = (vec![], vec![]);
        for _ in 0..1000 {
            let t = Instant::now();
            let b = read_parquet(p, Table::Runs).unwrap();
            r.push(t.elapsed().as_secs_f64());
            let t = Instant::now();
            let n: usize = b.iter().map(|b| runs_from_batch(b).unwrap().len()).sum();
            d.push(t.elapsed().as_secs_f64());
            std::hint::black_box(n);
        }
        println!(
            "{:>60} read {:.3} ms decode {:.3} ms",
            p.file_name().unwrap().to_string_lossy(),
            med(r),
            med(d)
        );
    }
}
