from tests.conftest import *  # noqa
from tests.conftest import make_stores
def test_x(serve, tmp_path, model_files):
    stores = make_stores(tmp_path, model_files)
    (stores.emberd / "bad.gguf").write_bytes(b"not a GGUF" * 100)
    (stores.emberd / "cut.gguf").write_bytes(model_files.mean.read_bytes()[:200])
    live = serve(model_stores=stores)
    print(live.client.get("/v1/models").json())
    print(live.client.get("/api/tags").json())
