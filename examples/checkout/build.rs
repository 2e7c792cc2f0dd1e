fn main() -> Result<(), herald_codegen::Error> {
    herald_codegen::compile("herald.toml")
}
