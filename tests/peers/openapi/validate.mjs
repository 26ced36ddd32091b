// Validates an OpenAPI document (a file, or `-` for standard input) against the official JSON
// Schema of its OpenAPI version, and resolves every $ref. Prints `valid <version>` and exits 0,
// or prints the errors and exits 1.
import { readFileSync } from "node:fs";
import { Validator } from "@seriousme/openapi-schema-validator";

const source = process.argv[2] ?? "-";
const text = readFileSync(source === "-" ? 0 : source, "utf8");
const validator = new Validator();
const result = await validator.validate(JSON.parse(text));
if (!result.valid) {
  console.log(JSON.stringify(result.errors, null, 2));
  process.exit(1);
}
try {
  validator.resolveRefs();
} catch (e) {
  console.log(`unresolved reference: ${e.message}`);
  process.exit(1);
}
console.log(`valid ${validator.version}`);
