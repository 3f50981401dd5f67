"""A real gRPC server and client (grpcio, the C-core implementation) for the
tcp-proxy tests. Messages are raw bytes, so no generated code is needed.

  grpc_peer.py server NAME     prints "listening PORT", serves until killed
  grpc_peer.py client ADDR     runs the calls below through ADDR, prints JSON

Service mesh.Echo:
  Who   (unary)         -> NAME, with trailing metadata x-served-by: NAME
  Chat  (bidi stream)   -> "NAME:" + each message, one answer per message;
                           the client sends its next message only after the
                           previous answer arrived, so both directions stream
  Fail  (unary)         -> status NOT_FOUND with details "no such thing"
"""

import json
import queue
import sys
from concurrent import futures

import grpc


def serve(name):
    def who(request, context):
        context.set_trailing_metadata((("x-served-by", name),))
        return name.encode()

    def chat(requests, context):
        for msg in requests:
            yield name.encode() + b":" + msg

    def fail(request, context):
        context.abort(grpc.StatusCode.NOT_FOUND, "no such thing")

    handlers = {
        "Who": grpc.unary_unary_rpc_method_handler(who),
        "Chat": grpc.stream_stream_rpc_method_handler(chat),
        "Fail": grpc.unary_unary_rpc_method_handler(fail),
    }
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("mesh.Echo", handlers),)
    )
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(f"listening {port}", flush=True)
    server.wait_for_termination()


def client(addr):
    out = {}
    with grpc.insecure_channel(addr) as channel:
        who = channel.unary_unary("/mesh.Echo/Who")
        answer, call = who.with_call(b"", timeout=30)
        out["who"] = answer.decode()
        out["trailer"] = dict(call.trailing_metadata()).get("x-served-by")

        chat = channel.stream_stream("/mesh.Echo/Chat")
        answered = queue.Queue()

        def messages():
            for i in range(5):
                yield f"m{i}".encode()
                answered.get(timeout=30)  # the answer came back before the next message

        replies = []
        for reply in chat(messages(), timeout=30):
            replies.append(reply.decode())
            answered.put(True)
        out["chat"] = replies

        fail = channel.unary_unary("/mesh.Echo/Fail")
        try:
            fail(b"", timeout=30)
            out["fail"] = "no error"
        except grpc.RpcError as e:
            out["fail"] = f"{e.code().name}: {e.details()}"
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "server":
        serve(sys.argv[2])
    else:
        client(sys.argv[2])
