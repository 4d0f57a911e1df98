//! Where each input's output goes when a command names several inputs and one output
//! directory (or prefix): `<stem>.mp4` for video jobs, `<stem>.jsonl` for infer jobs, the
//! stem being the input's file name without its extension. Two inputs with one stem would
//! write one output, so that is refused with both named.

use anyhow::bail;

/// The outputs of `inputs` under `directory` (a local directory, `file://` or `s3://`
/// prefix, with or without its trailing slash), each named after its input's stem with
/// `extension`; in the inputs' order.
pub fn outputs_in(
    inputs: &[String],
    directory: &str,
    extension: &str,
) -> anyhow::Result<Vec<String>> {
    let directory = directory.trim_end_matches('/');
    let mut outputs: Vec<String> = Vec::with_capacity(inputs.len());
    for input in inputs {
        let stem = stem(input);
        if stem.is_empty() {
            bail!("the input {input} has no file name to name its output after");
        }
        let output = format!("{directory}/{stem}.{extension}");
        if let Some(earlier) = outputs.iter().position(|o| *o == output) {
            bail!(
                "the inputs {} and {input} would both write {output}; give them different \
                 file names",
                inputs[earlier]
            );
        }
        outputs.push(output);
    }
    Ok(outputs)
}

/// An input's file name without its extension (a URL's query and fragment dropped).
fn stem(input: &str) -> &str {
    let path = input.split(['?', '#']).next().unwrap_or(input);
    let name = path.rsplit('/').next().unwrap_or(path);
    match name.rsplit_once('.') {
        Some((stem, _)) if !stem.is_empty() => stem,
        _ => name,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outputs_are_named_after_the_inputs_stems() {
        let inputs = [
            "file:///videos/a.mp4".to_string(),
            "https://cdn.example.com/clips/b.mkv?token=x".to_string(),
            "s3://bucket/c.d.mov".to_string(),
        ];
        assert_eq!(
            outputs_in(&inputs, "s3://out/dir/", "jsonl").expect("distinct"),
            [
                "s3://out/dir/a.jsonl",
                "s3://out/dir/b.jsonl",
                "s3://out/dir/c.d.jsonl"
            ]
        );
    }

    #[test]
    fn two_inputs_with_one_stem_are_refused_with_both_named() {
        let inputs = [
            "file:///one/clip.mp4".to_string(),
            "file:///two/clip.mov".to_string(),
        ];
        let error = outputs_in(&inputs, "/out", "mp4")
            .expect_err("same stem")
            .to_string();
        assert!(
            error.contains("/one/clip.mp4") && error.contains("/two/clip.mov"),
            "{error}"
        );
    }
}
