#!/bin/sh
# Tests of src/wordcount.sh; writes passed/failed counts to $ORCH_OUTPUT.
passed=0
failed=0
check() {
    got=$(printf "$2" | sh src/wordcount.sh)
    if [ "$got" = "$3" ]; then
        passed=$((passed + 1)); echo "ok   $1"
    else
        failed=$((failed + 1)); echo "FAIL $1: got $got, want $3"
    fi
}
check "empty input" "" 0
check "one line" "a b c\n" 3
check "two lines" "a b\nc\n" 3
check "blank lines" "\n\na\n" 1
echo "passed=$passed" >> "${ORCH_OUTPUT:-/dev/null}"
echo "failed=$failed" >> "${ORCH_OUTPUT:-/dev/null}"
[ "$failed" -eq 0 ]
