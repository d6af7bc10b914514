# A guest that reboots (run by __test__/migration.spec.ts): the first boot writes boot1 and reboots
# at once -- reboot -f, or, when /test/mode says "reset", it waits for the host's system_reset on the
# monitor; either way no unmount, the daemon sees the device reset. The second boot finds boot1,
# mounts again (the guest's /init did) and checks both the old and a new file work.
if [ ! -e boot1 ]; then
  echo "first boot" > boot1 && sync
  [ "$(cat /test/mode)" = reset ] || reboot -f
  sleep 600
  exit 3
fi
cat boot1 || exit 1
echo "second boot" > boot2 || exit 1
cat boot2 || exit 1
ls
