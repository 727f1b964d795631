from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class DataType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DATA_TYPE_UNSPECIFIED: _ClassVar[DataType]
    FLOAT32: _ClassVar[DataType]
    FLOAT16: _ClassVar[DataType]
    FLOAT64: _ClassVar[DataType]
    INT64: _ClassVar[DataType]
    INT32: _ClassVar[DataType]
    INT8: _ClassVar[DataType]
    UINT8: _ClassVar[DataType]
    BOOL: _ClassVar[DataType]
    INT16: _ClassVar[DataType]
    UINT16: _ClassVar[DataType]
    UINT32: _ClassVar[DataType]
    UINT64: _ClassVar[DataType]

class ColorLayout(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    COLOR_LAYOUT_UNSPECIFIED: _ClassVar[ColorLayout]
    RGB: _ClassVar[ColorLayout]
    BGR: _ClassVar[ColorLayout]
    GRAY: _ClassVar[ColorLayout]
DATA_TYPE_UNSPECIFIED: DataType
FLOAT32: DataType
FLOAT16: DataType
FLOAT64: DataType
INT64: DataType
INT32: DataType
INT8: DataType
UINT8: DataType
BOOL: DataType
INT16: DataType
UINT16: DataType
UINT32: DataType
UINT64: DataType
COLOR_LAYOUT_UNSPECIFIED: ColorLayout
RGB: ColorLayout
BGR: ColorLayout
GRAY: ColorLayout

class LinearQuantization(_message.Message):
    __slots__ = ("axis", "scale", "bias")
    AXIS_FIELD_NUMBER: _ClassVar[int]
    SCALE_FIELD_NUMBER: _ClassVar[int]
    BIAS_FIELD_NUMBER: _ClassVar[int]
    axis: int
    scale: _containers.RepeatedScalarFieldContainer[float]
    bias: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, axis: _Optional[int] = ..., scale: _Optional[_Iterable[float]] = ..., bias: _Optional[_Iterable[float]] = ...) -> None: ...

class LookupTableQuantization(_message.Message):
    __slots__ = ("axis", "group_size", "palette")
    AXIS_FIELD_NUMBER: _ClassVar[int]
    GROUP_SIZE_FIELD_NUMBER: _ClassVar[int]
    PALETTE_FIELD_NUMBER: _ClassVar[int]
    axis: int
    group_size: int
    palette: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, axis: _Optional[int] = ..., group_size: _Optional[int] = ..., palette: _Optional[_Iterable[float]] = ...) -> None: ...

class QuantizedData(_message.Message):
    __slots__ = ("bits", "packed", "linear", "lookup_table")
    BITS_FIELD_NUMBER: _ClassVar[int]
    PACKED_FIELD_NUMBER: _ClassVar[int]
    LINEAR_FIELD_NUMBER: _ClassVar[int]
    LOOKUP_TABLE_FIELD_NUMBER: _ClassVar[int]
    bits: int
    packed: bytes
    linear: LinearQuantization
    lookup_table: LookupTableQuantization
    def __init__(self, bits: _Optional[int] = ..., packed: _Optional[bytes] = ..., linear: _Optional[_Union[LinearQuantization, _Mapping]] = ..., lookup_table: _Optional[_Union[LookupTableQuantization, _Mapping]] = ...) -> None: ...

class Tensor(_message.Message):
    __slots__ = ("name", "dims", "data_type", "raw", "quantized")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DIMS_FIELD_NUMBER: _ClassVar[int]
    DATA_TYPE_FIELD_NUMBER: _ClassVar[int]
    RAW_FIELD_NUMBER: _ClassVar[int]
    QUANTIZED_FIELD_NUMBER: _ClassVar[int]
    name: str
    dims: _containers.RepeatedScalarFieldContainer[int]
    data_type: DataType
    raw: bytes
    quantized: QuantizedData
    def __init__(self, name: _Optional[str] = ..., dims: _Optional[_Iterable[int]] = ..., data_type: _Optional[_Union[DataType, str]] = ..., raw: _Optional[bytes] = ..., quantized: _Optional[_Union[QuantizedData, _Mapping]] = ...) -> None: ...

class FloatList(_message.Message):
    __slots__ = ("values",)
    VALUES_FIELD_NUMBER: _ClassVar[int]
    values: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, values: _Optional[_Iterable[float]] = ...) -> None: ...

class IntList(_message.Message):
    __slots__ = ("values",)
    VALUES_FIELD_NUMBER: _ClassVar[int]
    values: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, values: _Optional[_Iterable[int]] = ...) -> None: ...

class StringList(_message.Message):
    __slots__ = ("values",)
    VALUES_FIELD_NUMBER: _ClassVar[int]
    values: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, values: _Optional[_Iterable[bytes]] = ...) -> None: ...

class TensorList(_message.Message):
    __slots__ = ("values",)
    VALUES_FIELD_NUMBER: _ClassVar[int]
    values: _containers.RepeatedCompositeFieldContainer[Tensor]
    def __init__(self, values: _Optional[_Iterable[_Union[Tensor, _Mapping]]] = ...) -> None: ...

class Attribute(_message.Message):
    __slots__ = ("name", "f", "i", "s", "t", "floats", "ints", "strings")
    NAME_FIELD_NUMBER: _ClassVar[int]
    F_FIELD_NUMBER: _ClassVar[int]
    I_FIELD_NUMBER: _ClassVar[int]
    S_FIELD_NUMBER: _ClassVar[int]
    T_FIELD_NUMBER: _ClassVar[int]
    FLOATS_FIELD_NUMBER: _ClassVar[int]
    INTS_FIELD_NUMBER: _ClassVar[int]
    STRINGS_FIELD_NUMBER: _ClassVar[int]
    name: str
    f: float
    i: int
    s: bytes
    t: Tensor
    floats: FloatList
    ints: IntList
    strings: StringList
    def __init__(self, name: _Optional[str] = ..., f: _Optional[float] = ..., i: _Optional[int] = ..., s: _Optional[bytes] = ..., t: _Optional[_Union[Tensor, _Mapping]] = ..., floats: _Optional[_Union[FloatList, _Mapping]] = ..., ints: _Optional[_Union[IntList, _Mapping]] = ..., strings: _Optional[_Union[StringList, _Mapping]] = ...) -> None: ...

class Node(_message.Message):
    __slots__ = ("name", "op_type", "domain", "inputs", "outputs", "attributes")
    NAME_FIELD_NUMBER: _ClassVar[int]
    OP_TYPE_FIELD_NUMBER: _ClassVar[int]
    DOMAIN_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    name: str
    op_type: str
    domain: str
    inputs: _containers.RepeatedScalarFieldContainer[str]
    outputs: _containers.RepeatedScalarFieldContainer[str]
    attributes: _containers.RepeatedCompositeFieldContainer[Attribute]
    def __init__(self, name: _Optional[str] = ..., op_type: _Optional[str] = ..., domain: _Optional[str] = ..., inputs: _Optional[_Iterable[str]] = ..., outputs: _Optional[_Iterable[str]] = ..., attributes: _Optional[_Iterable[_Union[Attribute, _Mapping]]] = ...) -> None: ...

class Graph(_message.Message):
    __slots__ = ("nodes", "initializers")
    NODES_FIELD_NUMBER: _ClassVar[int]
    INITIALIZERS_FIELD_NUMBER: _ClassVar[int]
    nodes: _containers.RepeatedCompositeFieldContainer[Node]
    initializers: _containers.RepeatedCompositeFieldContainer[Tensor]
    def __init__(self, nodes: _Optional[_Iterable[_Union[Node, _Mapping]]] = ..., initializers: _Optional[_Iterable[_Union[Tensor, _Mapping]]] = ...) -> None: ...

class ImageType(_message.Message):
    __slots__ = ("color_layout", "scale", "bias")
    COLOR_LAYOUT_FIELD_NUMBER: _ClassVar[int]
    SCALE_FIELD_NUMBER: _ClassVar[int]
    BIAS_FIELD_NUMBER: _ClassVar[int]
    color_layout: ColorLayout
    scale: _containers.RepeatedScalarFieldContainer[float]
    bias: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, color_layout: _Optional[_Union[ColorLayout, str]] = ..., scale: _Optional[_Iterable[float]] = ..., bias: _Optional[_Iterable[float]] = ...) -> None: ...

class ArrayType(_message.Message):
    __slots__ = ("data_type",)
    DATA_TYPE_FIELD_NUMBER: _ClassVar[int]
    data_type: DataType
    def __init__(self, data_type: _Optional[_Union[DataType, str]] = ...) -> None: ...

class Dimensions(_message.Message):
    __slots__ = ("dims",)
    DIMS_FIELD_NUMBER: _ClassVar[int]
    dims: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, dims: _Optional[_Iterable[int]] = ...) -> None: ...

class DimRange(_message.Message):
    __slots__ = ("lower", "upper")
    LOWER_FIELD_NUMBER: _ClassVar[int]
    UPPER_FIELD_NUMBER: _ClassVar[int]
    lower: int
    upper: int
    def __init__(self, lower: _Optional[int] = ..., upper: _Optional[int] = ...) -> None: ...

class FlexibleShape(_message.Message):
    __slots__ = ("default_shape", "enumerated", "ranges")
    DEFAULT_SHAPE_FIELD_NUMBER: _ClassVar[int]
    ENUMERATED_FIELD_NUMBER: _ClassVar[int]
    RANGES_FIELD_NUMBER: _ClassVar[int]
    default_shape: _containers.RepeatedScalarFieldContainer[int]
    enumerated: _containers.RepeatedCompositeFieldContainer[Dimensions]
    ranges: _containers.RepeatedCompositeFieldContainer[DimRange]
    def __init__(self, default_shape: _Optional[_Iterable[int]] = ..., enumerated: _Optional[_Iterable[_Union[Dimensions, _Mapping]]] = ..., ranges: _Optional[_Iterable[_Union[DimRange, _Mapping]]] = ...) -> None: ...

class Feature(_message.Message):
    __slots__ = ("name", "description", "image", "array", "shape", "default_value", "batched", "batch_axis")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    ARRAY_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_VALUE_FIELD_NUMBER: _ClassVar[int]
    BATCHED_FIELD_NUMBER: _ClassVar[int]
    BATCH_AXIS_FIELD_NUMBER: _ClassVar[int]
    name: str
    description: str
    image: ImageType
    array: ArrayType
    shape: FlexibleShape
    default_value: Tensor
    batched: bool
    batch_axis: int
    def __init__(self, name: _Optional[str] = ..., description: _Optional[str] = ..., image: _Optional[_Union[ImageType, _Mapping]] = ..., array: _Optional[_Union[ArrayType, _Mapping]] = ..., shape: _Optional[_Union[FlexibleShape, _Mapping]] = ..., default_value: _Optional[_Union[Tensor, _Mapping]] = ..., batched: _Optional[bool] = ..., batch_axis: _Optional[int] = ...) -> None: ...

class Metadata(_message.Message):
    __slots__ = ("name", "version", "author", "license", "description", "user")
    class UserEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    AUTHOR_FIELD_NUMBER: _ClassVar[int]
    LICENSE_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    USER_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: str
    author: str
    license: str
    description: str
    user: _containers.ScalarMap[str, str]
    def __init__(self, name: _Optional[str] = ..., version: _Optional[str] = ..., author: _Optional[str] = ..., license: _Optional[str] = ..., description: _Optional[str] = ..., user: _Optional[_Mapping[str, str]] = ...) -> None: ...

class ModelDescription(_message.Message):
    __slots__ = ("metadata", "inputs", "outputs", "class_labels", "class_labels_output", "custom_model")
    METADATA_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    CLASS_LABELS_FIELD_NUMBER: _ClassVar[int]
    CLASS_LABELS_OUTPUT_FIELD_NUMBER: _ClassVar[int]
    CUSTOM_MODEL_FIELD_NUMBER: _ClassVar[int]
    metadata: Metadata
    inputs: _containers.RepeatedCompositeFieldContainer[Feature]
    outputs: _containers.RepeatedCompositeFieldContainer[Feature]
    class_labels: _containers.RepeatedScalarFieldContainer[str]
    class_labels_output: str
    custom_model: str
    def __init__(self, metadata: _Optional[_Union[Metadata, _Mapping]] = ..., inputs: _Optional[_Iterable[_Union[Feature, _Mapping]]] = ..., outputs: _Optional[_Iterable[_Union[Feature, _Mapping]]] = ..., class_labels: _Optional[_Iterable[str]] = ..., class_labels_output: _Optional[str] = ..., custom_model: _Optional[str] = ...) -> None: ...

class ModelPackage(_message.Message):
    __slots__ = ("format_version", "description", "graph")
    FORMAT_VERSION_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    GRAPH_FIELD_NUMBER: _ClassVar[int]
    format_version: int
    description: ModelDescription
    graph: Graph
    def __init__(self, format_version: _Optional[int] = ..., description: _Optional[_Union[ModelDescription, _Mapping]] = ..., graph: _Optional[_Union[Graph, _Mapping]] = ...) -> None: ...
