"""Runs a Python service's unittest suite and writes JUnit XML.

    python3 ci/pyunit.py SERVICE_DIR JUNIT_FILE

Tests are discovered under SERVICE_DIR/tests (test*.py) with SERVICE_DIR on sys.path,
as `python3 -m unittest discover -s tests` run from SERVICE_DIR would. Prints the usual
unittest report and exits 1 when a test failed or errored.
"""

import os
import sys
import time
import unittest
import xml.etree.ElementTree as ET


class Result(unittest.TextTestResult):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.cases = []  # (test, seconds, outcome, message)
        self._started = 0.0

    def startTest(self, test):
        self._started = time.perf_counter()
        super().startTest(test)

    def _record(self, test, outcome, message=""):
        self.cases.append((test, time.perf_counter() - self._started, outcome, message))

    def addSuccess(self, test):
        super().addSuccess(test)
        self._record(test, "passed")

    def addFailure(self, test, err):
        super().addFailure(test, err)
        self._record(test, "failure", self.failures[-1][1])

    def addError(self, test, err):
        super().addError(test, err)
        self._record(test, "error", self.errors[-1][1])

    def addSkip(self, test, reason):
        super().addSkip(test, reason)
        self._record(test, "skipped", reason)


def junit(suite_name, result, seconds):
    counts = {k: sum(1 for c in result.cases if c[2] == k) for k in ("failure", "error", "skipped")}
    root = ET.Element("testsuites")
    suite = ET.SubElement(
        root,
        "testsuite",
        name=suite_name,
        tests=str(len(result.cases)),
        failures=str(counts["failure"]),
        errors=str(counts["error"]),
        skipped=str(counts["skipped"]),
        time=f"{seconds:.3f}",
    )
    for test, secs, outcome, message in result.cases:
        cls, _, name = test.id().rpartition(".")
        case = ET.SubElement(suite, "testcase", classname=cls, name=name, time=f"{secs:.3f}")
        if outcome != "passed":
            first = message.strip().splitlines()[-1] if message.strip() else outcome
            ET.SubElement(case, outcome, message=first).text = message
    return ET.ElementTree(root)


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: pyunit.py SERVICE_DIR JUNIT_FILE")
    service, out = (os.path.abspath(p) for p in sys.argv[1:])
    os.chdir(service)
    sys.path.insert(0, service)
    suite = unittest.defaultTestLoader.discover("tests", top_level_dir=None)
    runner = unittest.TextTestRunner(resultclass=Result, verbosity=2, stream=sys.stdout)
    started = time.perf_counter()
    result = runner.run(suite)
    os.makedirs(os.path.dirname(out), exist_ok=True)
    tree = junit(os.path.basename(service), result, time.perf_counter() - started)
    tree.write(out, encoding="utf-8", xml_declaration=True)
    if result.testsRun == 0:
        sys.exit(f"no tests found under {service}/tests")
    sys.exit(0 if result.wasSuccessful() else 1)


if __name__ == "__main__":
    main()
