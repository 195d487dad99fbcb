//! A line diff for test failures: the expected and actual decisions as pretty
//! JSON, lines only in the expectation marked `-`, lines only in the actual
//! result marked `+`. Decision lists are a few dozen lines, so the quadratic
//! longest-common-subsequence table is cheap and keeps this dependency-free.

/// Every line of both texts, in order, prefixed with `  `, `- ` or `+ `.
pub fn lines(expected: &str, actual: &str) -> Vec<String> {
    let old: Vec<&str> = expected.lines().collect();
    let new: Vec<&str> = actual.lines().collect();
    // common[i][j]: length of the longest common subsequence of old[i..] and new[j..].
    let mut common = vec![vec![0usize; new.len() + 1]; old.len() + 1];
    for i in (0..old.len()).rev() {
        for j in (0..new.len()).rev() {
            common[i][j] = if old[i] == new[j] {
                common[i + 1][j + 1] + 1
            } else {
                common[i + 1][j].max(common[i][j + 1])
            };
        }
    }
    let mut out = Vec::with_capacity(old.len().max(new.len()));
    let (mut i, mut j) = (0, 0);
    while i < old.len() || j < new.len() {
        if i < old.len() && j < new.len() && old[i] == new[j] {
            out.push(format!("  {}", old[i]));
            i += 1;
            j += 1;
        } else if j == new.len() || (i < old.len() && common[i + 1][j] >= common[i][j + 1]) {
            out.push(format!("- {}", old[i]));
            i += 1;
        } else {
            out.push(format!("+ {}", new[j]));
            j += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_removed_and_added_lines() {
        let diff = lines("a\nb\nc\n", "a\nx\nc\nd\n");
        assert_eq!(diff, ["  a", "- b", "+ x", "  c", "+ d"]);
        assert_eq!(lines("", "a"), ["+ a"]);
        assert_eq!(lines("a", ""), ["- a"]);
    }
}
