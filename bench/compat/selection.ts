/**
 * Which tests of s3tests/functional/test_s3.py the harness runs: the object tests (get, put, head,
 * delete, ranges, conditionals, multipart, copy, listing, metadata, presigned URLs, POST uploads,
 * anonymous access to public buckets) and the few bucket and authentication tests around them.
 * Left out: features the origin (s3rver) does not have at all, whose tests fail directly and
 * through keel alike and so measure nothing about keel (versioning, object lock, encryption,
 * bucket policies, lifecycle, logging, tagging, object ACL management, tenants, IAM).
 *
 * Tests are chosen by name patterns over what pytest collects, so the selection at another commit
 * of the suite picks up renamed or new tests of the same kind; compat.json lists the tests run.
 */

/** Name patterns of the tests run, by what they exercise. */
export const INCLUDE: Readonly<Record<string, RegExp>> = {
  listing: /^test_(bucket_list|basic_key_count|bucket_create_special_key_names)/,
  'get, put, head, delete': /^test_object_|^test_multi_objectv?2?_delete|^test_bucketv?2?_notexist/,
  buckets: /^test_bucket_(create_delete|delete_|head)|^test_buckets_create_then_list|^test_list_buckets_/,
  ranges: /^test_ranged_/,
  conditionals:
    /^test_(get|put|copy)_object_if|^test_put_(object_if|current_object|object_current)|^test_delete_objects?_/,
  multipart: /^test_(multipart_|abort_multipart|list_multipart|upload_part_copy)/,
  atomicity: /^test_atomic_/,
  'expect 100-continue': /^test_100_continue/,
  'object attributes': /^test_get_object_attributes/,
  'public buckets': /^test_access_bucket_/,
  'POST uploads': /^test_post_object_/,
};

/** Name patterns of tests left out although an include pattern matches them, and why. */
export const EXCLUDE: Readonly<Record<string, RegExp>> = {
  'encryption (s3rver has none)': /sse|encrypt|kms|_enc(_|\[|$)/,
  'object lock (s3rver has none)': /_lock_/,
  'versioning (s3rver has none)': /versioning|versioned|version_/,
  'tenants (a Ceph RGW feature)': /tenant/,
  'bucket policies (s3rver has none)': /bucket_policy|with_policy/,
  'tagging (s3rver has none)': /tagging|_tags?(_|$)/,
  'object ACL management (s3rver has none)': /^test_object_acl|_acl_grants|copy_canned_acl|put_acl_mtime/,
  'BitTorrent (s3rver has none)': /torrent/,
};

/** A test's name as junit XML gives it: the node id without its file (`path::test_x[param]` → `test_x[param]`). */
export function testName(nodeId: string): string {
  return nodeId.slice(nodeId.lastIndexOf('::') + 2);
}

/** The function name of a pytest node id (`path::test_x[param]` → `test_x`). */
export function testFunction(nodeId: string): string {
  const name = testName(nodeId);
  const bracket = name.indexOf('[');
  return bracket < 0 ? name : name.slice(0, bracket);
}

/** The collected node ids the harness runs, in the suite's order. */
export function selectTests(nodeIds: readonly string[]): string[] {
  const included = (f: string): boolean => Object.values(INCLUDE).some((p) => p.test(f));
  const excluded = (f: string): boolean => Object.values(EXCLUDE).some((p) => p.test(f));
  return nodeIds.filter((id) => {
    const f = testFunction(id);
    return included(f) && !excluded(f);
  });
}
