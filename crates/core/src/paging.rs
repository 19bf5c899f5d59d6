//! One page of a listing whose continuation is the key of the last item
//! handed out (Lambda's markers, ECS's tokens, S3's ListBuckets): items
//! removed between pages move nothing that was not yet seen, as an offset
//! would. Each service keeps its own limits and token encoding.

/// The items of `items` (in `key` order, or its reverse with `descending`)
/// whose key comes after `after`, at most `max`, and the last one's key if
/// more remain.
pub fn after_key<T>(
    items: impl IntoIterator<Item = T>,
    key: impl Fn(&T) -> String,
    after: Option<&str>,
    descending: bool,
    max: usize,
) -> (Vec<T>, Option<String>) {
    let past = |k: &str| after.is_none_or(|a| if descending { k < a } else { k > a });
    let mut rest = items.into_iter().filter(|i| past(&key(i))).peekable();
    let page: Vec<T> = rest.by_ref().take(max).collect();
    let next = rest.peek().and(page.last()).map(&key);
    (page, next)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_go_on_after_the_last_key_whatever_was_removed() {
        let key = |n: &i32| format!("{n:03}");
        let (p, next) = after_key(1..=6, key, None, false, 2);
        assert_eq!((p, next.as_deref()), (vec![1, 2], Some("002")));
        // 3 was removed meanwhile: the page starts at 4, not 5.
        let (p, next) = after_key([4, 5, 6], key, next.as_deref(), false, 2);
        assert_eq!((p, next.as_deref()), (vec![4, 5], Some("005")));
        let (p, next) = after_key([6], key, next.as_deref(), false, 2);
        assert_eq!((p, next), (vec![6], None));
        let (p, next) = after_key([3, 2, 1], key, Some("003"), true, 5);
        assert_eq!((p, next), (vec![2, 1], None));
    }
}
