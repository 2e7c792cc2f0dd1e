"""Interop check: Confluent's own Python client against a running Herald registry.

Usage: python confluent_client.py http://127.0.0.1:PORT
Prints one line per check and a closing 'N passed, N failed' line; exits non-zero on failure.
"""
import sys
import traceback

from confluent_kafka.schema_registry import (
    Schema,
    SchemaReference,
    SchemaRegistryClient,
)
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.schema_registry.error import SchemaRegistryError
from confluent_kafka.schema_registry.protobuf import ProtobufDeserializer, ProtobufSerializer
from confluent_kafka.serialization import MessageField, SerializationContext
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

URL = sys.argv[1]
client = SchemaRegistryClient({"url": URL})
results = []

ORDER_V1 = """{"type":"record","name":"Order","namespace":"shop","fields":[
  {"name":"id","type":"string"},{"name":"total","type":"long"}]}"""
ORDER_V2 = """{"type":"record","name":"Order","namespace":"shop","fields":[
  {"name":"id","type":"string"},{"name":"total","type":"long"},
  {"name":"note","type":["null","string"],"default":null}]}"""
ORDER_BAD = """{"type":"record","name":"Order","namespace":"shop","fields":[
  {"name":"id","type":"string"},{"name":"total","type":"long"},{"name":"coupon","type":"string"}]}"""


def check(name):
    def wrap(fn):
        try:
            fn()
            results.append((name, True))
            print(f"ok   {name}")
        except Exception:  # noqa: BLE001 - report every failure and go on
            results.append((name, False))
            print(f"FAIL {name}")
            traceback.print_exc()
        return fn
    return wrap


def expect_error(code, fn):
    try:
        fn()
    except SchemaRegistryError as error:
        assert error.error_code == code, f"expected {code}, got {error.error_code}: {error}"
        return error
    raise AssertionError(f"expected error {code}, got success")


@check("register, get by id, versions, latest")
def _():
    id1 = client.register_schema("orders-value", Schema(ORDER_V1, "AVRO"))
    again = client.register_schema("orders-value", Schema(ORDER_V1, "AVRO"))
    assert id1 == again
    id2 = client.register_schema("orders-value", Schema(ORDER_V2, "AVRO"))
    assert id2 != id1
    assert client.get_versions("orders-value") == [1, 2]
    latest = client.get_latest_version("orders-value")
    assert latest.version == 2 and latest.schema_id == id2
    fetched = client.get_schema(id1)
    assert fetched.schema_type == "AVRO" and '"total"' in fetched.schema_str
    assert "orders-value" in client.get_subjects()


@check("same schema under a second subject gets the same id")
def _():
    id_a = client.register_schema("orders-value", Schema(ORDER_V1, "AVRO"))
    id_b = client.register_schema("orders-copy-value", Schema(ORDER_V1, "AVRO"))
    assert id_a == id_b


@check("lookup")
def _():
    found = client.lookup_schema("orders-value", Schema(ORDER_V2, "AVRO"))
    assert found.version == 2 and found.subject == "orders-value"
    expect_error(40403, lambda: client.lookup_schema("orders-value", Schema('"string"', "AVRO")))
    expect_error(40401, lambda: client.lookup_schema("no-such-subject", Schema(ORDER_V1, "AVRO")))


@check("compatibility and config")
def _():
    assert client.test_compatibility("orders-value", Schema(ORDER_V2, "AVRO"))
    assert not client.test_compatibility("orders-value", Schema(ORDER_BAD, "AVRO"))
    err = expect_error(409, lambda: client.register_schema("orders-value", Schema(ORDER_BAD, "AVRO")))
    assert "coupon" in str(err)
    assert client.set_compatibility("orders-value", "FULL_TRANSITIVE") == {"compatibility": "FULL_TRANSITIVE"}
    assert client.get_compatibility("orders-value") == "FULL_TRANSITIVE"
    client.set_compatibility(level="FORWARD")
    assert client.get_compatibility() == "FORWARD"
    client.set_compatibility(level="BACKWARD")
    expect_error(42203, lambda: client.set_compatibility("orders-value", "SIDEWAYS"))


@check("soft and permanent deletes")
def _():
    client.register_schema("tmp-value", Schema('"string"', "AVRO"))
    client.register_schema("tmp-value", Schema('["null","string"]', "AVRO"))
    assert client.delete_version("tmp-value", 1) == 1
    assert client.get_versions("tmp-value") == [2]
    expect_error(40407, lambda: client.delete_version("tmp-value", 2, permanent=True))
    assert client.delete_subject("tmp-value") == [2]
    expect_error(40401, lambda: client.get_versions("tmp-value"))
    assert sorted(client.delete_subject("tmp-value", permanent=True)) == [1, 2]
    assert "tmp-value" not in client.get_subjects()


@check("avro references")
def _():
    money = '{"type":"record","name":"Money","namespace":"shop","fields":[{"name":"units","type":"long"}]}'
    client.register_schema("money-value", Schema(money, "AVRO"))
    invoice = '{"type":"record","name":"Invoice","namespace":"shop","fields":[{"name":"amount","type":"shop.Money"}]}'
    refs = [SchemaReference("shop.Money", "money-value", 1)]
    schema_id = client.register_schema("invoice-value", Schema(invoice, "AVRO", refs))
    fetched = client.get_schema(schema_id)
    assert fetched.references[0].name == "shop.Money"
    expect_error(42206, lambda: client.delete_subject("money-value"))


@check("avro serializer and deserializer round trip")
def _():
    serializer = AvroSerializer(client, ORDER_V2, conf={"auto.register.schemas": True})
    ctx = SerializationContext("orders", MessageField.VALUE)
    data = serializer({"id": "o-1", "total": 1250, "note": "gift"}, ctx)
    assert data[0] == 0
    schema_id = int.from_bytes(data[1:5], "big")
    assert schema_id == client.lookup_schema("orders-value", Schema(ORDER_V2, "AVRO")).schema_id
    value = AvroDeserializer(client)(data, ctx)
    assert value == {"id": "o-1", "total": 1250, "note": "gift"}, value


def build_protobuf_classes():
    pool = descriptor_pool.DescriptorPool()
    money = descriptor_pb2.FileDescriptorProto(name="common/money.proto", package="common", syntax="proto3")
    m = money.message_type.add(name="Money")
    m.field.add(name="units", number=1, type=descriptor_pb2.FieldDescriptorProto.TYPE_INT64,
                label=descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL)
    pool.Add(money)
    orders = descriptor_pb2.FileDescriptorProto(name="shop/orders.proto", package="shop.v1", syntax="proto3",
                                                dependency=["common/money.proto"])
    first = orders.message_type.add(name="Ping")
    first.field.add(name="id", number=1, type=descriptor_pb2.FieldDescriptorProto.TYPE_STRING,
                    label=descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL)
    order = orders.message_type.add(name="OrderCreated")
    order.field.add(name="order_id", number=1, type=descriptor_pb2.FieldDescriptorProto.TYPE_STRING,
                    label=descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL)
    order.field.add(name="total", number=2, type=descriptor_pb2.FieldDescriptorProto.TYPE_MESSAGE,
                    type_name=".common.Money", label=descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL)
    pool.Add(orders)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("shop.v1.OrderCreated"))


@check("protobuf serializer and deserializer round trip with a reference")
def _():
    order_class = build_protobuf_classes()
    serializer = ProtobufSerializer(order_class, client, {"use.deprecated.format": False})
    ctx = SerializationContext("order-events", MessageField.VALUE)
    message = order_class(order_id="o-7")
    message.total.units = 990
    data = serializer(message, ctx)
    assert data[0] == 0
    # Second top-level message: index array [1] is written as count 1, index 1 (zig-zag).
    assert data[5:7] == b"\x02\x02", data[:8]
    schema_id = int.from_bytes(data[1:5], "big")
    registered = client.get_schema(schema_id)
    assert registered.schema_type == "PROTOBUF"
    assert registered.references and registered.references[0].subject == "common/money.proto"
    decoded = ProtobufDeserializer(order_class, {"use.deprecated.format": False})(data, ctx)
    assert decoded.order_id == "o-7" and decoded.total.units == 990
    versions = client.get_versions("order-events-value")
    assert versions == [1], versions


@check("protobuf text schema registration and compatibility")
def _():
    v1 = 'syntax = "proto3";\npackage shop.v1;\nmessage Refund { string id = 1; int32 cents = 2; }\n'
    bad = 'syntax = "proto3";\npackage shop.v1;\nmessage Refund { string id = 1; string cents = 2; }\n'
    client.register_schema("refunds-value", Schema(v1, "PROTOBUF"))
    assert not client.test_compatibility("refunds-value", Schema(bad, "PROTOBUF"))
    expect_error(409, lambda: client.register_schema("refunds-value", Schema(bad, "PROTOBUF")))
    expect_error(42201, lambda: client.register_schema("refunds-value", Schema("message {", "PROTOBUF")))


passed = sum(1 for _, ok in results if ok)
failed = len(results) - passed
print(f"{passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
