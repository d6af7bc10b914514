# Descriptors held across a live migration (run by __test__/migration.spec.ts): the helper opens a
# file for reading, one for writing, one for appending, a folder, a file it then renames, a file it
# then unlinks, one under a POSIX write lock and one under flock (and "vanish", when the host made
# it), waits for ./go, then uses each and prints "<case>: <word>" lines.
# /test/hold-opts, when present, holds the helper's options (e.g. "nounlink").
/test/cx hold /mnt/held-dir "$(cat /test/hold-opts 2>/dev/null)"
