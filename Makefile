# Shortcuts for the scripts in scripts/ (which are what the README runs).
.PHONY: run test build check bench conformance
run:
	./scripts/demo.sh
test:
	./scripts/test.sh
build:
	cargo build --release
check:
	cargo fmt --check && cargo clippy --release --all-targets -- -D warnings
bench:
	./benches/run.sh
conformance:
	./scripts/conformance.sh
