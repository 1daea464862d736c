/**
 * The fake model server tests use, re-exported from `safety/fake_models.ts`
 * (where it lives so the safety benchmark's transcript scenarios can drive
 * the real model loop with it).
 * @module
 */
export * from "../safety/fake_models.ts";
