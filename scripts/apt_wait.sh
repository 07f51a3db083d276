# Sourced by scripts/bootstrap.sh: run `apt-get update` even while another apt or dpkg process
# holds its locks. apt's own `-o DPkg::Lock::Timeout=N` makes `install` queue behind another
# run, but `update` ignores it and fails at once on the lists lock ("Could not get lock
# /var/lib/apt/lists/lock"). So wait for the locks with a deadline, saying who holds them.

# The lock files apt and dpkg take (overridable, for the tests).
APT_LOCK_FILES=${APT_LOCK_FILES:-/var/lib/apt/lists/lock /var/lib/dpkg/lock-frontend /var/lib/dpkg/lock /var/cache/apt/archives/lock}
APT_LOCK_WAIT_S=${APT_LOCK_WAIT_S:-600}

# "PID (command line)" of a process holding one of APT_LOCK_FILES, or nothing. apt and dpkg
# hold them with fcntl locks, listed in /proc/locks by inode (no root needed to read it).
apt_lock_holder() {
  local file id pid major minor inode
  for file in $APT_LOCK_FILES; do
    [[ -e $file ]] || continue
    read -r major minor inode < <(stat -c '%Hd %Ld %i' "$file")
    id=$(printf '%02x:%02x:%s' "$major" "$minor" "$inode")  # as /proc/locks writes it
    # /proc/locks: "1: POSIX ADVISORY WRITE <pid> <major>:<minor>:<inode> <start> <end>";
    # lines with "->" are waiters, not holders.
    pid=$(awk -v id="$id" '$2 != "->" && $6 == id { print $5; exit }' /proc/locks)
    if [[ -n $pid && -d /proc/$pid ]]; then
      printf '%s (%s) on %s' "$pid" "$(tr -s '\0\n\t' '   ' </proc/"$pid"/cmdline | cut -c1-200 | sed 's/ $//')" "$file"
      return 0
    fi
  done
}

# Milliseconds since the epoch. Not $SECONDS: bash counts it in whole wall-clock seconds from
# the shell's start, so it can tick 0 -> 1 a moment after the start and a 2 s deadline could
# pass after 1.1 s (seen once in CI).
apt_now_ms() {
  local t=${EPOCHREALTIME/[.,]/}
  echo $((t / 1000))
}

# Wait until no process holds an apt/dpkg lock; fail after APT_LOCK_WAIT_S seconds.
wait_for_apt_locks() {
  local deadline=$(($(apt_now_ms) + APT_LOCK_WAIT_S * 1000)) holder said=""
  while holder=$(apt_lock_holder) && [[ -n $holder ]]; do
    if (($(apt_now_ms) >= deadline)); then
      printf '[bootstrap] gave up after %ss: apt is still locked by %s\n' "$APT_LOCK_WAIT_S" "$holder" >&2
      return 1
    fi
    if [[ $holder != "$said" ]]; then  # say it once per holder, not every second
      printf '[bootstrap] waiting for another apt/dpkg run to finish (up to %ss): %s\n' \
        "$APT_LOCK_WAIT_S" "$holder" >&2
      said=$holder
    fi
    sleep 1
  done
}

# `apt-get update` that waits for the locks first, and again if another run took them between
# the wait and the update (the race is narrow, the deadline is shared).
apt_get_update() {
  local deadline=$(($(apt_now_ms) + APT_LOCK_WAIT_S * 1000)) sudo=""
  [[ $(id -u) -eq 0 ]] || sudo=sudo
  while true; do
    APT_LOCK_WAIT_S=$(((deadline - $(apt_now_ms) + 999) / 1000)) wait_for_apt_locks || return 1
    $sudo apt-get update -q && return 0
    [[ -n $(apt_lock_holder) ]] && (($(apt_now_ms) < deadline)) || return 1
  done
}
