fn main() { println!("recovery-tui: not yet built"); }
