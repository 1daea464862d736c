/**
 * image.* primitives. Registering an image stores it; it grants nothing: the
 * capabilities an image lists are granted only when the host launches it.
 * @module
 */
import { parseImage } from "../runtime/images.ts";
import { authorize, peek } from "./authorize.ts";
import { storeBytes } from "../runtime/budgets.ts";
import { chargeStore, type Primitive } from "./call.ts";
import { checkFlow } from "./filesystem.ts";

/** The image family. */
export const IMAGE: Record<string, Primitive> = {
  "image.register": {
    fields: ["image"],
    async run(call) {
      const image = parseImage(call.args.image, call.k.toolNames);
      call.target = `image:${image.name}`;
      await authorize(call, { resource: call.target, right: "write" });
      // The registry is read by other processes (and its prompts become theirs): normal data at most.
      await checkFlow(call, "normal", call.target);
      chargeStore(call, storeBytes(JSON.stringify(image)));
      await call.k.store.putImage(image, `pid:${call.proc.pid}`);
      await call.k.emit("image.registered", `pid:${call.proc.pid}`, call.target, {
        tools: image.tools,
      }, call.correlationId);
      return { name: image.name, granted: [] };
    },
  },
  "image.list": {
    fields: [],
    async run(call) {
      call.target = "image:*";
      const visible = [];
      for (const img of await call.k.store.listImages()) {
        if (await peek(call, `image:${img.name}`, "read")) {
          visible.push({ name: img.name, description: img.description, tools: img.tools });
        }
      }
      return visible;
    },
  },
};
