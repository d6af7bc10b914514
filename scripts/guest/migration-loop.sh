# Live-migration workload (run by __test__/migration.spec.ts and scripts/bench-migration.mts): appends
# sequence numbers to seq.log, one open-append-close each, and writes and reads back one of eight
# small files per step, until the host creates ./stop (after the guest moved to the destination).
# Any failed call or wrong content ends it with status 1; the host checks seq.log holds 1..N once each.
i=0
while [ ! -e stop ]; do
  i=$((i + 1))
  echo "$i" >> seq.log || { echo "append $i failed"; exit 1; }
  n=$((i % 8))
  echo "value $i" > "f$n" || { echo "write f$n at $i failed"; exit 1; }
  got=$(cat "f$n") || { echo "read f$n at $i failed"; exit 1; }
  [ "$got" = "value $i" ] || { echo "read f$n at $i: got '$got'"; exit 1; }
done
echo "iterations $i"
