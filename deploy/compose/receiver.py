"""Demo callback receiver: prints each callback the executor posts, answers 200."""
import json
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        try:
            cb = json.loads(body)
            print(f"{cb.get('task_id')}.{cb.get('subtask_id')} {cb.get('progress')} "
                  f"{cb.get('status')} {str(cb.get('error_message', ''))[:120]}", flush=True)
        except ValueError:
            print("non-JSON body", flush=True)
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.end_headers()
        self.wfile.write(b'{"status":"success"}')

    def log_message(self, *args):
        pass


ThreadingHTTPServer(("0.0.0.0", 8001), Handler).serve_forever()
