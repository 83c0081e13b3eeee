# Shell helper of the CLI tests: `expect <status> <stderr substring> -- <args...>` runs
# "$fragile" <args...> and checks that it exits with <status> and one stderr line containing
# the substring, without a hang (timeout ${EXPECT_TIMEOUT:-60} s). Failures count in $fails.
fails=${fails:-0}
expect() {
  local want=$1 needle=$2; shift 3
  local err status lines
  err=$(timeout "${EXPECT_TIMEOUT:-60}" "$fragile" "$@" 2>&1 >/dev/null)
  status=$?
  lines=$(printf '%s\n' "$err" | grep -c .)
  if [ "$status" != "$want" ] || [[ "$err" != *"$needle"* ]] || [ "$lines" != 1 ]; then
    echo "FAIL: fragile $* -> status $status (want $want), $lines line(s):"
    printf '%s\n' "$err" | sed 's/^/    /'
    fails=$((fails + 1))
  else
    echo "ok: fragile $*: $err"
  fi
}
